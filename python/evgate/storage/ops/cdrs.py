"""storage room: the writer's op of ``cdrs`` — the CDR a StopTransaction makes, written in its
transaction (a follow-up of the stop, in its Emission); a retried stop makes no second one."""

from __future__ import annotations

from evgate.storage.cdrs import INSERT_CDR, Cdr, cdr_args
from evgate.storage.ops.base import Statement, Write

__all__ = ["CDRS", "insert"]

CDRS: Statement[Cdr] = Statement(INSERT_CDR, name="cdrs", args=cdr_args)


def insert(cdr: Cdr) -> Write[None]:
    """Insert ``cdr`` (none if one with its id is there)."""
    return CDRS(cdr)
