"""storage room: typed errors that the edges (API, CLI) map to their own answers."""

from __future__ import annotations

import asyncpg

__all__ = [
    "AlreadyExists",
    "BadReference",
    "DatabaseUnavailable",
    "InUse",
    "NotFound",
    "StorageError",
    "ValueRefused",
    "is_unavailable",
]

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


class DatabaseUnavailable(StorageError, ConnectionError):
    """PostgreSQL cannot serve the query now (down, restarting, shutting down, out of
    connection slots, or the connection broke): the caller may retry later.

    Raised in place of asyncpg's and the socket's errors by the pool (``Database.pool``), whose
    original is its ``__cause__``. It is a ConnectionError, so code that takes an OSError for an
    outage (the writer's ``is_transient``) still does.
    """


# too_many_connections, admin_shutdown, crash_shutdown, cannot_connect_now: the server is
# there but will not take this connection now. Class 08 (connection exception) as a whole too.
_UNAVAILABLE_SQLSTATES = {"53300", "57P01", "57P02", "57P03"}


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says that the database is unavailable, rather than refusing a query."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state.startswith("08") or state in _UNAVAILABLE_SQLSTATES
    if isinstance(exc, asyncpg.InterfaceError):
        # The connection is closed or the pool is closing; asyncpg's own (client-side)
        # DataError, also an InterfaceError, is a refused value.
        return not isinstance(exc, ValueError)
    # Refused, reset, unreachable, or no connection within the pool's or connect's timeout.
    return isinstance(exc, OSError)
