"""storage room: typed errors that the edges (API, CLI) map to their own answers."""

from __future__ import annotations

import asyncpg

__all__ = [
    "AlreadyExists",
    "BadReference",
    "DatabaseUnavailable",
    "InUse",
    "InsufficientBalance",
    "NotFound",
    "NotPermitted",
    "StorageError",
    "ValueRefused",
    "is_server_away",
    "is_unavailable",
]

#: PostgreSQL refused a value the caller gave (SQLSTATE class 22, a data exception: a text
#: holding U+0000, a number or a time out of range). It is asyncpg's own class, named here so
#: that the edges map it without importing asyncpg; it carries ``sqlstate``.
ValueRefused = asyncpg.DataError

#: PostgreSQL refused a row to the role of the request (SQLSTATE 42501, insufficient
#: privilege): a request acting for a sub-operator wrote a row that would not be its own (a
#: resource given to another sub-operator or to the operator), or into a table row-level
#: security does not open to tenants (migration 0020). asyncpg's class, named here so that the
#: edges map it without importing asyncpg.
NotPermitted = asyncpg.InsufficientPrivilegeError


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


class InsufficientBalance(StorageError):
    """A booking would take a user's balance below zero; nothing was booked."""


class DatabaseUnavailable(StorageError, ConnectionError):
    """PostgreSQL cannot serve the query now (down, restarting, shutting down, out of
    connection slots, or the connection broke): the caller may retry later.

    Raised in place of asyncpg's and the socket's errors by the pool (``Database.pool``), whose
    original is its ``__cause__``. It is a ConnectionError, so code that takes an OSError for an
    outage still does.
    """


def is_server_away(exc: DatabaseUnavailable) -> bool:
    """Whether ``exc`` says the server or the connection to it went away, not that one query
    was rolled back or cancelled while the server served everyone else (a deadlock, a
    serialization failure, a cancel or ``statement_timeout``: classes 40 and 57014). Only the
    first is an outage of the process's database (``Database.health``); both are a 503."""
    cause = exc.__cause__
    if isinstance(cause, asyncpg.PostgresError):
        state = cause.sqlstate or ""
        return state[:2] in _UNAVAILABLE_CLASSES and state[:2] != "40" and state != "57014"
    return True


# SQLSTATE classes that say "not now" rather than "not this": connection exception,
# transaction rollback (serialization failure, deadlock), insufficient resources (disk full,
# out of memory, too many connections), operator intervention (admin or crash shutdown,
# cannot connect now), system error (I/O error).
_UNAVAILABLE_CLASSES = {"08", "40", "53", "57", "58"}


def is_unavailable(exc: BaseException, *, closed: bool = False) -> bool:
    """Whether ``exc`` says that the database is unavailable for now, rather than refusing a
    query or a bug: the one test every room uses (the writer retries such a batch, a loop backs
    off, the API answers 503, a charger's CALL is left unanswered).

    Args:
        exc: what a query (or a connect, or an acquire from the pool) raised.
        closed: whether the connection (or pool) it was raised on is closed now. asyncpg's
            client-side errors (an ``InterfaceError``, an ``InternalClientError`` "cannot
            switch to state ...") are the outage that closed it only then; on an open
            connection they are evgate's own mistakes (a wrong argument count, a second
            operation at once), which must be seen, not retried in silence.
    """
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _UNAVAILABLE_CLASSES
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        # asyncpg's own (client-side) DataError, also an InterfaceError, is a refused value.
        return closed and not isinstance(exc, ValueError)
    # Refused, reset, unreachable, or no connection within the pool's or connect's timeout
    # (and DatabaseUnavailable, a ConnectionError).
    return isinstance(exc, OSError | TimeoutError)
