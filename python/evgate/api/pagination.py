"""api room: the one page shape every list endpoint returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec

__all__ = ["Page", "page_of"]

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], rename="camel"):
    """A page of results; pass ``nextCursor`` back (as ``after``) for the next page, null at
    the end."""

    data: list[T]
    next_cursor: str | None = None


def page_of(items: Sequence[T], limit: int, cursor_of: Callable[[T], object]) -> Page[T]:
    """Wrap a query's rows; a full page gets the cursor of its last row."""
    next_cursor = str(cursor_of(items[-1])) if items and len(items) >= limit else None
    return Page(data=list(items), next_cursor=next_cursor)
