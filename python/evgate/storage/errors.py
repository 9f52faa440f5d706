"""storage room: typed errors that the edges (API, CLI) map to their own answers."""

from __future__ import annotations

import asyncpg

__all__ = ["AlreadyExists", "BadReference", "InUse", "NotFound", "StorageError", "ValueRefused"]

#: PostgreSQL refused a value the caller gave (SQLSTATE class 22, a data exception: a text
#: holding U+0000, a number or a time out of range). It is asyncpg's own class, named here so
#: that the edges map it without importing asyncpg; it carries ``sqlstate``.
ValueRefused = asyncpg.DataError


class StorageError(Exception):
    """Base of the storage room's domain errors."""


class NotFound(StorageError):
    """The row the caller named does not exist."""


class AlreadyExists(StorageError):
    """A row with that key exists already."""


class BadReference(StorageError):
    """A value names another row that does not exist (a charger's installation id)."""


class InUse(StorageError):
    """The row cannot be deleted while other rows belong to it."""
