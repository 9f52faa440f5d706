"""storage room: the writer's op base classes, the typed write, and the one helper that groups
a batch's writes by op.

A write is a :class:`Write` ``(op, item)``: the op is a :class:`WriteOp`, a kind of write made
once at start (in ``storage/ops/``), the item its data for one submission. Calling an op with
an item makes its write (``TRANSACTION_STARTS(start)``), typed by the op's result. The writer
(``storage/writer.py``) and the EMIT op (``storage/ops/outbox.py``) both merge the writes of
several submissions with :func:`write_grouped`: each op runs once on its items of all of them,
in the order the ops first appear (those that read the batch's writes last).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import asyncpg

__all__ = [
    "CopyRows",
    "Deferred",
    "FetchEach",
    "Results",
    "RetryBatch",
    "Statement",
    "TailFailed",
    "Write",
    "WriteOp",
    "asks_rerun",
    "before_commit",
    "bytea_literal",
    "database_of",
    "in_rounds",
    "open_tail",
    "run_deferred",
    "take_tail",
    "text_literal",
    "write_grouped",
]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
T = TypeVar("T")


class Write(NamedTuple, Generic[ResultT]):
    """One write of a submission: an op and its item. ``ResultT`` is what the op returns for
    it (read back with :class:`Results`)."""

    op: WriteOp[Any, ResultT]
    item: Any


class RetryBatch(Exception):
    """Raised by an op that met, in its cheap way, something its careful way resolves (a
    resent meter value stored long ago): the writer rolls the batch's transaction back and
    runs the batch again at once, and the op, remembering, takes the careful way then.
    Neither an outage nor a refusal. The writer runs a batch so at most a few times."""


class WriteOp(Generic[ItemT, ResultT]):
    """A kind of write the writer merges across the submissions of a batch.

    Subclasses implement :meth:`write`. An op must be a pure function of its items: after a
    failed attempt the writer runs it again on the same items in a new transaction.
    """

    #: For logs and metrics.
    name: str = "write"
    #: The op reads what other ops of the batch write (the stop's price reads the meter
    #: values): :func:`write_grouped` runs it after them, and it calls :func:`run_deferred`
    #: before it reads.
    reads_batch: bool = False

    def __call__(self, item: ItemT) -> Write[ResultT]:
        """The write of ``item`` by this op (for ``Writer.submit`` or an Emission)."""
        return Write(self, item)

    def weight(self, item: ItemT) -> int:
        """How many rows ``item`` counts for, against the batch and queue limits."""
        return 1

    async def write(self, conn: asyncpg.Connection, items: list[ItemT]) -> list[ResultT]:
        """Write ``items`` (from several submissions) inside the batch's open transaction.

        The writer begins that transaction by hand (with the batch's id): ``conn`` sends the
        BEGIN before the op's first statement, or with the COMMIT if the batch's ops only
        deferred theirs (:func:`before_commit`). So an op must not call
        ``conn.transaction()``: it is refused, and the submissions are rejected. For a
        savepoint, send ``SAVEPOINT name`` / ``ROLLBACK TO SAVEPOINT name``.

        Returns:
            One result per item, in order.
        """
        raise NotImplementedError

    def committed(self, conn: asyncpg.Connection) -> None:
        """The transaction of the last :meth:`write` on ``conn`` committed. Not called when it
        rolled back or its outcome is unknown: an op that remembers what it wrote (ids it
        made) may keep it from here on, and must forget it at its next ``write`` otherwise."""


def database_of(conn: asyncpg.Connection) -> object:
    """What an op keys what it remembers of committed rows by (a series' number): the
    writer's connections share one (``conn.database``: they see one database, and a writer
    puts a charger's batches on whichever committer is free, so a cache per connection would
    learn every charger's rows once per committer); any other connection is its own."""
    return getattr(conn, "database", conn)


#: What an op that deferred a statement is asked when the batch's COMMIT round trip failed
#: with an error PostgreSQL answered: whether it takes that error on itself by a run of the
#: batch again (it then takes its careful way: :class:`RetryBatch`).
TailFailed = Callable[[BaseException], bool]


class Deferred(NamedTuple):
    """A statement deferred to a batch's COMMIT, and who to ask if that round trip fails."""

    sql: str
    failed: TailFailed | None = None


# Per connection while the writer commits a batch on it: the statements ops deferred to the
# batch's COMMIT (see before_commit).
_TAILS: weakref.WeakKeyDictionary[asyncpg.Connection, list[Deferred]] = weakref.WeakKeyDictionary()


def open_tail(conn: asyncpg.Connection) -> None:
    """The writer begins a batch on ``conn``: statements given to :func:`before_commit` wait
    for its COMMIT from now on."""
    _TAILS[conn] = []


def take_tail(conn: asyncpg.Connection) -> list[Deferred]:
    """The statements deferred to the COMMIT of the batch on ``conn`` (the writer sends them
    with it, in one round trip); ``conn`` is no longer in a batch."""
    return _TAILS.pop(conn, [])


async def before_commit(
    conn: asyncpg.Connection, sql: str, failed: TailFailed | None = None
) -> None:
    """Run ``sql`` (literal values only, no parameters) in ``conn``'s open transaction, at the
    latest just before its COMMIT.

    Inside a writer batch it is sent in the COMMIT's own round trip (``sql; ...; COMMIT`` as
    one simple query): at a fleet's pace a batch holds a message or two, so every round trip
    is paid per message, by Python and by PostgreSQL. It is still in the batch's transaction:
    if it fails, COMMIT is not run and the batch is refused like any other write. Outside a
    batch (an op called on a connection of its own) it runs now. For writes whose results
    the op knows without asking (appends: the outbox; new meter values).

    Args:
        failed: asked, when the COMMIT round trip fails, whether the op takes the error on
            itself by a run of the batch again (:data:`TailFailed`); outside a batch, an error
            is raised as it is.

    Raises:
        asyncpg.CharacterNotInRepertoireError: ``sql`` holds U+0000 or a lone surrogate
            (see :func:`_refuse_unstorable`): the submission is refused, not the batch stalled.
    """
    _refuse_unstorable(sql)  # whichever literal its maker built without text_literal
    tail = _TAILS.get(conn)
    if tail is None:
        await conn.execute(sql)
    else:
        tail.append(Deferred(sql, failed))


async def run_deferred(conn: asyncpg.Connection) -> None:
    """Run now what ops deferred to the COMMIT of the batch on ``conn`` (in its transaction,
    still), for an op that reads what they write; nothing outside a batch.

    Raises:
        RetryBatch: a deferred statement failed and its op takes that on itself (as at COMMIT).
    """
    tail = _TAILS.get(conn)
    if not tail:
        return
    deferred = tail[:]
    tail.clear()
    try:
        await conn.execute("; ".join(d.sql for d in deferred))
    except asyncpg.PostgresError as exc:
        if asks_rerun(deferred, exc):
            raise RetryBatch("a deferred statement asked for another run") from exc
        raise


def asks_rerun(deferred: Sequence[Deferred], exc: BaseException) -> bool:
    """Whether an op of the ``deferred`` statements, whose round trip failed with ``exc``,
    takes that error on itself by a run of the batch again (its :data:`TailFailed`)."""
    return any(d.failed is not None and d.failed(exc) for d in deferred)


def text_literal(value: str) -> str:
    """``value`` as an SQL string literal (the escape-string form, which means the same
    whatever ``standard_conforming_strings`` says).

    Raises:
        asyncpg.CharacterNotInRepertoireError: ``value`` holds U+0000 or a lone surrogate,
            which no PostgreSQL text holds (see :func:`_refuse_unstorable`).
    """
    _refuse_unstorable(value)
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _refuse_unstorable(value: str) -> None:
    """Raise what PostgreSQL answers a parameter holding U+0000 (SQLSTATE 22021, a
    ``storage.errors.ValueRefused``) when ``value`` holds U+0000 or a lone surrogate.

    Sent as a parameter, such a text is refused by PostgreSQL (22021) or by asyncpg's encoder
    (its own DataError): the writer re-runs the batch one submission at a time and only that
    one fails. Inside a literal it would instead end the query text early (a simple query is a
    NUL-terminated string: PostgreSQL answers 08P01 and closes the connection) or fail to
    encode after the batch's statements ran; the writer takes either for an outage whose
    COMMIT outcome is unknown and retries the batch for ever, stalling every charger of its
    committer. Raised while the op writes, it is an ordinary refusal of one submission.
    """
    # isascii is O(1) in CPython (a flag of the string): the encode runs only for non-ASCII.
    if "\x00" in value or not (value.isascii() or _encodes(value)):
        at = value.find("\x00")
        if at < 0:
            at = next(i for i, c in enumerate(value) if "\ud800" <= c <= "\udfff")
        raise asyncpg.exceptions.CharacterNotInRepertoireError(
            "text holds U+0000 or a lone surrogate, which PostgreSQL cannot store:"
            f" {value[max(0, at - 20) : at + 20]!a}"
        )


def _encodes(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def bytea_literal(value: bytes) -> str:
    """``value`` as an SQL bytea literal (hex, in the escape-string form like
    :func:`text_literal`)."""
    return "E'\\\\x" + value.hex() + "'::bytea"


class Results:
    """The results of a submission's writes, each read by its write: ``results[write]``
    (typed by the write's op), so no caller depends on the position of a write."""

    __slots__ = ("_results", "_writes")

    def __init__(self, writes: Sequence[Write[Any]], results: Sequence[Any]) -> None:
        self._writes = writes
        self._results = results

    def __getitem__(self, write: Write[T]) -> T:
        """The result of ``write`` (the very object submitted).

        Raises:
            KeyError: ``write`` was not among the writes.
        """
        for index, candidate in enumerate(self._writes):
            if candidate is write:
                result: T = self._results[index]
                return result
        raise KeyError(write.op.name)


async def write_grouped(
    conn: asyncpg.Connection, groups: Sequence[Sequence[Write[Any]]]
) -> tuple[list[list[Any]], list[WriteOp[Any, Any]]]:
    """Run every group's writes (a group: one submission's), each op once on its items of all
    groups, in the order the ops first appear, inside ``conn``'s open transaction; the ops
    that read the batch (``WriteOp.reads_batch``) after the others, so that they see every
    write of the batch, whichever submission came first.

    Returns:
        The results per group, in the order of its writes; and the ops that ran, in order.
    """
    by_op: dict[WriteOp[Any, Any], list[tuple[int, int, Any]]] = {}
    for g_index, writes in enumerate(groups):
        for w_index, (op, item) in enumerate(writes):
            by_op.setdefault(op, []).append((g_index, w_index, item))
    results: list[list[Any]] = [[None] * len(writes) for writes in groups]
    ops = sorted(by_op, key=lambda op: op.reads_batch)  # stable: first appearance otherwise
    for op in ops:
        entries = by_op[op]
        op_results = await op.write(conn, [item for _, _, item in entries])
        for (g_index, w_index, _), result in zip(entries, op_results, strict=True):
            results[g_index][w_index] = result
    return results, ops


def in_rounds(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[int]]:
    """The indexes of ``items`` split into rounds in which no key repeats, each item in the
    round after the previous item with its key: one set-based statement per round then
    touches a row at most once (PostgreSQL refuses an upsert that touches a row twice, and an
    ``UPDATE ... FROM`` applies only one of several matches), in submission order."""
    rounds: list[list[int]] = []
    seen: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        k = key(item)
        n = seen[k] = seen.get(k, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(index)
    return rounds


class CopyRows(WriteOp[Sequence[tuple[Any, ...]], None]):
    """Append rows with COPY. An item is a sequence of row tuples in ``columns`` order.

    For append-only tables without a unique key (an outbox, a log): rows are written once per
    committed batch, which the writer guarantees.
    """

    def __init__(self, table: str, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.name = f"copy:{table}"

    def weight(self, item: Sequence[tuple[Any, ...]]) -> int:
        return len(item)

    async def write(
        self, conn: asyncpg.Connection, items: list[Sequence[tuple[Any, ...]]]
    ) -> list[None]:
        records = [row for item in items for row in item]
        if records:
            await conn.copy_records_to_table(self.table, records=records, columns=self.columns)
        return [None] * len(items)


class Statement(WriteOp[ItemT, None]):
    """Run one SQL statement per item, pipelined with ``executemany``.

    For upserts and updates: statements run in submission order, so two items touching the same
    row (a charger's resent message in the same batch) apply one after the other.

    Args:
        sql: the statement.
        name: for logs and metrics.
        args: an item's arguments, in the order of the statement's parameters (next to the
            SQL, so no caller knows that order); without it, an item is its arguments.
    """

    def __init__(
        self,
        sql: str,
        name: str = "statement",
        args: Callable[[ItemT], Sequence[Any]] | None = None,
    ) -> None:
        self.sql = sql
        self.name = name
        self.args = args

    async def write(self, conn: asyncpg.Connection, items: list[ItemT]) -> list[None]:
        args = self.args
        await conn.executemany(self.sql, items if args is None else [args(i) for i in items])
        return [None] * len(items)


class FetchEach(WriteOp[ItemT, ResultT]):
    """Run one statement per item and return its first column (None without a row): for the
    rare messages whose events depend on what the statement did or drew (a sequence value, a
    row that a resend finds already there).

    Args:
        sql: the statement.
        name: for logs and metrics.
        args: an item's arguments, in the order of the statement's parameters.
    """

    def __init__(
        self,
        sql: str,
        name: str = "fetch_each",
        args: Callable[[ItemT], Sequence[Any]] | None = None,
    ) -> None:
        self.sql = sql
        self.name = name
        self.args = args

    async def write(self, conn: asyncpg.Connection, items: list[ItemT]) -> list[ResultT]:
        args = self.args
        if args is None:
            return [await conn.fetchval(self.sql, *item) for item in items]  # type: ignore[misc]
        return [await conn.fetchval(self.sql, *args(item)) for item in items]
