"""storage room: the group-commit writer — every charger's state changes, batched, committed.

Handlers ``await writer.submit(writes, key=charger_id)``; the writer gathers the submissions
of all connections into a batch (until ``batch_rows`` rows or ``flush_interval`` seconds after
the first), writes the batch in ONE transaction — each kind of write merged across submissions
(COPY for appends, one pipelined statement batch for upserts; the few appends of a small
batch, its outbox rows and new meter rows, as literal statements sent with the COMMIT itself,
``ops.base.before_commit``; its BEGIN goes with the first statement an op sends, or with the
COMMIT when none does: ``_BatchConnection``) — and only after COMMIT resolves every submission
of the batch. At a fleet's pace a batch holds a message or two, so each round trip is paid per
message. A few
committers, each an asyncio task with its own connection, commit batches side by side, so that
PostgreSQL and Python each keep a core busy; a submission joins the batch a committer is
gathering, so that at a fleet's pace one batch holds what all chargers sent meanwhile, and a
charger's next submission takes the committer of its previous one while that one is not yet
committed, so that its writes stay in order. A handler answers its
charger after ``submit`` returns, so an acknowledged message is durable (ARCHITECTURE rule 1).

A write is a :class:`~evgate.storage.ops.base.Write` ``(op, item)``: the op a
:class:`~evgate.storage.ops.base.WriteOp`, a kind of write made once at start in
``storage/ops/`` (one module per table family), the item its typed data for one submission.
``submit`` returns the ops' results, one per write, in order (``None`` for most; the stored
transaction for a StartTransaction).

Faults:

* Database unreachable, restarting, out of disk: the batch is kept and retried with backoff,
  nothing is acknowledged; new submissions queue up to ``queue_rows`` rows, then ``submit``
  waits (back-pressure: the gateway runs a connection's CALLs one at a time, so a waiting
  handler stops that charger's reads).
* Connection lost during COMMIT (the outcome is unknown): every batch writes its id into
  ``writer_commits`` in its own transaction (with the COMMIT); after reconnecting the writer
  looks it up, so a batch is never written twice nor acknowledged unwritten.
* The connection dies under a batch (PostgreSQL stopping mid-COPY): whatever asyncpg raises
  then (a closed transport, ``InternalClientError: cannot switch to state``), a failure after
  which the transaction cannot be rolled back is an outage like the first case, and an error
  at COMMIT that PostgreSQL did not answer itself leaves the COMMIT's outcome unknown.
* A write PostgreSQL refuses (a constraint, a value out of range): the batch is re-run one
  submission per transaction, so only the offending submission fails (its ``submit`` raises
  :class:`WriteRejected`) and every other charger's rows commit.

* An op asks for another run (``RetryBatch``: its cheap way met what its careful way
  resolves, a resent meter value): the batch is rolled back and run again at once, neither
  counted as a retry nor refused, at most three times in a row.

Retried messages (a charger resends what was not acknowledged) are the ops' business: their
dedupe keys hold across batches and within one (see ``storage/ops/``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg

from evgate.metrics import Registry
from evgate.outages import Dependency
from evgate.storage.errors import is_unavailable
from evgate.storage.ops import outbox
from evgate.storage.ops.base import (
    RetryBatch,
    Write,
    asks_rerun,
    open_tail,
    take_tail,
    write_grouped,
)
from evgate.tasks import service_task, wait_event

__all__ = [
    "WriteRejected",
    "Writer",
    "WriterClosed",
    "is_outage",
]

log = logging.getLogger(__name__)

# Seconds the writer filters events by the names it read before reading them again (see
# Writer._wanted).
_WANTED_MAX_AGE = 1.0

# How many times one batch is run again at an op's request (RetryBatch); then its error
# counts as a refusal.
_RERUNS = 3

# How many filtered runs of one batch may be refused because the subscriptions changed what is
# wanted meanwhile (_wanted_changed); the next run writes every event, filtered by nothing
# (so there is nothing to check): a script changing subscriptions without pause can delay a
# batch, never stall it.
_WANTED_RUNS = 3


class WriterClosed(Exception):
    """The writer is stopped (or stopped before this submission committed): nothing of it is
    acknowledged; the charger will resend it."""


class WriteRejected(Exception):
    """PostgreSQL refused this submission's rows (not a fault of the database's availability);
    the other submissions of its batch committed. Its ``__cause__`` is the refusal (a
    ``storage.errors.ValueRefused`` for a value no column can hold: an edge answers that as
    it answers the value refused on a write of its own)."""


@dataclass(eq=False)
class _Submission:
    writes: Sequence[Write[Any]]
    weight: int
    future: asyncio.Future[list[Any]]
    key: Hashable | None


@dataclass
class WriterStats:
    """Figures for metrics and tests (also exported as ``evgate_writer_*`` metrics)."""

    batches: int = 0
    rows: int = 0
    submissions: int = 0
    retries: int = 0
    rejected: int = 0
    #: Batches run unfiltered (every event written) after _WANTED_RUNS refused filtered runs.
    unfiltered: int = 0
    #: Round trips to PostgreSQL of the batches' statements, BEGIN and COMMIT included (not
    #: the once-per-connection reads): at a fleet's pace each costs per message.
    round_trips: int = 0
    last_commit_seconds: float = 0.0
    commit_seconds: list[float] = field(default_factory=list)


def is_outage(exc: BaseException) -> bool:
    """Whether a storage call failed because the database is away for now (or the writer is
    stopped), rather than for what it was asked: a charger's CALL that fails so is left
    unanswered, and the charger sends it again."""
    return isinstance(exc, WriterClosed) or is_unavailable(exc)


class _Database:
    """The database one writer's committers write to, as the ops see it (a key)."""


class _BatchConnection:
    """What the ops of a batch get for the committer's connection: the batch's ``BEGIN`` goes
    with the first statement that needs it (its ``writer_commits`` row with the COMMIT).

    An op that only defers (``ops.base.before_commit``: outbox rows, a MeterValues message of
    known series) sends nothing of its own, so its batch is one round trip: ``BEGIN; ...;
    COMMIT`` as one simple query (:meth:`take_begin`). Any other use of the connection that
    sends something (every coroutine method of ``asyncpg.Connection``) sends the ``BEGIN``
    first, in a round trip of its own, as before. One per connection, for the connection's
    life: the ops key what they remember per connection by this object, and what they
    remember of committed rows by its ``database`` (``ops.base.database_of``), one object for
    all the writer's connections.
    """

    # A method that would start something on the connection without awaiting it here: its
    # transaction or cursor would not be the batch's.
    _REFUSED = frozenset({"transaction", "cursor"})

    def __init__(self, conn: asyncpg.Connection, stats: WriterStats, database: object) -> None:
        self.raw = conn
        self.stats = stats  # counts the round trips
        self.database = database
        self._begin: str | None = None

    def defer_begin(self, sql: str) -> None:
        """The batch's ``BEGIN`` (and its first statements): sent before the first statement
        an op sends, else with the COMMIT."""
        self._begin = sql

    def take_begin(self) -> str | None:
        """The ``BEGIN`` not sent yet (for the COMMIT's round trip), or None."""
        begin, self._begin = self._begin, None
        return begin

    async def begin_now(self) -> None:
        """Send the pending ``BEGIN`` now (an op is about to send a statement)."""
        begin = self.take_begin()
        if begin is not None:
            self.stats.round_trips += 1
            await self.raw.execute(begin)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if not callable(attr):
            return attr
        if name in self._REFUSED:
            raise asyncpg.InterfaceError(
                f"an op may not call Connection.{name}() inside the writer's batch"
            )
        method = attr
        if inspect.iscoroutinefunction(attr):

            async def sent(*args: Any, **kwargs: Any) -> Any:
                await self.begin_now()
                self.stats.round_trips += 1
                return await attr(*args, **kwargs)

            method = sent
        # Kept on the instance (a method bound to the connection this object lives with), so
        # a statement costs no closure and no inspection after the connection's first.
        self.__dict__[name] = method
        return method


def _wanted_changed(exc: BaseException) -> bool:
    """Whether ``exc`` is the refusal of a batch's ``writer_commits`` row made NULL because the
    subscriptions changed what is wanted since the names it left events out by."""
    return (
        isinstance(exc, asyncpg.NotNullViolationError)
        and getattr(exc, "table_name", None) == "writer_commits"
    )


class _ConnectionBroken(Exception):
    """A batch failed and its transaction could not be rolled back: the connection died under
    the batch (the server went away mid-statement), whatever error the op met first. An outage,
    never the rows' fault."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"the connection broke ({type(cause).__name__}: {cause})")


class _CommitUnknown(Exception):
    """The connection failed while COMMIT was in flight: the batch may or may not be written.
    Its id tells, once the database answers again (``writer_commits``)."""

    def __init__(
        self,
        batch_id: uuid.UUID,
        results: list[list[Any]],
        backend: tuple[int, datetime],
        cause: Exception,
    ) -> None:
        super().__init__(f"connection lost during COMMIT ({cause})")
        self.batch_id = batch_id
        self.results = results
        # The backend (PostgreSQL server process) that sent the COMMIT: its pid and start (a
        # pid alone may name another backend by then, after a restart of PostgreSQL).
        self.backend = backend


class Writer:
    """The group-commit writer of one evgate process.

    ``await start()`` before use, ``await stop()`` on shutdown (flushes what is queued, up to
    ``stop_timeout``; what could not be written fails with :class:`WriterClosed`).

    The writer has ``committers`` committers, each a task with its own connection committing its own
    batches, so that PostgreSQL works on one committer's batch while Python prepares another's (one
    connection leaves one of them idle at a time). A submission goes to the committer gathering
    a batch (not yet writing one), else to an idle one, else to the one with the fewest rows
    queued (:meth:`committer_of`): a committer is opened only when the others are writing (or
    the one gathering has no room for the submission), so
    batches hold what every charger sent during one linger rather than a committer's share of
    it (each batch costs PostgreSQL its BEGIN, ``writer_commits`` row, COMMIT and WAL flush;
    bench/README.md). But while a submission of the same ``key`` (the charger's id; unkeyed
    submissions are one key) is queued or being written, the next one takes its committer: one
    charger's writes are committed in submission order, and two committers never touch the
    same charger's rows at once, so they never wait on each other's locks. This is the
    guarantee several evgate processes give each other, within one.

    Args:
        dsn: the database to write to (each committer opens a dedicated connection).
        committers: how many batches may be in flight at once.
        batch_rows: a committer commits once this many rows are gathered.
        flush_interval: or this many seconds after the batch's first submission (only while
            batches commit faster than that; a slower database gathers them meanwhile).
        queue_rows: rows that may wait (queued or in batches being written, all committers) before
            ``submit`` blocks.
        metrics: the process's metrics registry (optional).
    """

    def __init__(
        self,
        dsn: str,
        *,
        committers: int = 4,
        batch_rows: int = 5000,
        flush_interval: float = 0.005,
        queue_rows: int = 100_000,
        retry_max_delay: float = 2.0,
        stop_timeout: float = 10.0,
        metrics: Registry | None = None,
        health: Dependency | None = None,
    ) -> None:
        if committers < 1:
            raise ValueError("a writer needs at least one committer")
        self.dsn = dsn
        # Outages are logged once, where the rest of the process reports them (Database.health).
        self.health = health or Dependency("PostgreSQL", is_unavailable)
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.queue_rows = queue_rows
        self.retry_max_delay = retry_max_delay
        self.stop_timeout = stop_timeout
        self.stats = WriterStats()
        # The events some subscription wants (ops.outbox.filter_by), shared by the committers,
        # and when they were read (loop time; None: to be read before the next batch).
        self.wanted = outbox.WantedEvents(-1, frozenset())
        self.wanted_at: float | None = None
        # What the committers' connections have in common for the ops (ops.base.database_of):
        # weakly referenced, it lives as long as the writer.
        self.database = _Database()
        self._committers = [_Committer(self, i) for i in range(committers)]
        # The committer of each key with submissions queued or being written, and how many.
        self._placed: dict[Hashable | None, tuple[_Committer, int]] = {}
        self._pending_rows = 0  # queued + in the batches being written
        self._space = asyncio.Condition()
        self._started = False
        self._stopping = False
        self._closed = False
        self._metrics(metrics)

    def _metrics(self, registry: Registry | None) -> None:
        registry = registry or Registry()
        self._m_batches = registry.counter("evgate_writer_batches_total", "Batches committed")
        self._m_rows = registry.counter("evgate_writer_rows_total", "Rows committed")
        self._m_retries = registry.counter(
            "evgate_writer_retries_total", "Batch attempts that failed and were retried"
        )
        self._m_rejected = registry.counter(
            "evgate_writer_rejected_total", "Submissions PostgreSQL refused"
        )
        self._m_unfiltered = registry.counter(
            "evgate_writer_unfiltered_total",
            "Batches that wrote every event, unfiltered, after the subscriptions changed what"
            " is wanted during each of their filtered runs",
        )
        self._m_commit = registry.gauge(
            "evgate_writer_commit_seconds", "Duration of the last batch, first write to COMMIT"
        )
        depth = registry.gauge(
            "evgate_writer_queue_rows", "Rows waiting for the writer (queued or being written)"
        )
        depth.set_function(lambda: self._pending_rows)

    @property
    def queue_depth(self) -> int:
        """Rows waiting: queued or in a batch being written."""
        return self._pending_rows

    async def start(self) -> None:
        """Open the committers' connections and start their tasks."""
        if self._started:
            return
        conns = await asyncio.gather(
            *(self._connect() for _ in self._committers), return_exceptions=True
        )
        failed = [c for c in conns if isinstance(c, BaseException)]
        if failed:
            for conn in conns:
                if isinstance(conn, asyncpg.Connection):
                    conn.terminate()
            raise failed[0]
        for committer, conn in zip(self._committers, conns, strict=True):
            committer.start(conn)
        self._started = True

    async def stop(self) -> None:
        """Write what is queued (up to ``stop_timeout``), then stop. Safe to call twice."""
        if not self._started:
            self._closed = True
            return
        self._stopping = True
        tasks = [committer.task for committer in self._committers if committer.task is not None]
        for committer in self._committers:
            committer.wakeup.set()
        done, late = await asyncio.wait(tasks, timeout=self.stop_timeout)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("writer: a committer failed", exc_info=task.exception())
        if late:
            log.warning(
                "writer: %d rows not written at stop (database unavailable)", self.queue_depth
            )
            for task in late:
                task.cancel()
            await asyncio.wait(late)
        self._started = False
        self._closed = True
        self._fail_all(WriterClosed("evgate is stopping"))
        async with self._space:
            self._space.notify_all()
        await asyncio.gather(*(committer.close() for committer in self._committers))

    async def submit(
        self, writes: Sequence[Write[Any]], *, key: Hashable | None = None
    ) -> list[Any]:
        """Queue ``writes`` and return their results once the batch holding them committed.

        Waits while ``queue_rows`` rows are already waiting (a submission larger than that is
        admitted alone). Cancelling the caller does not withdraw the writes: they may still
        commit (a message whose answer was lost, which its dedupe key absorbs).

        Args:
            writes: the writes, committed together in one transaction.
            key: whose writes these are (the charger's id): one key's submissions commit in
                the order they were made.

        Raises:
            WriterClosed: the writer is stopped before the writes committed.
            WriteRejected: PostgreSQL refused these rows.
        """
        if self._closed or self._stopping:
            raise WriterClosed("the writer is stopped")
        weight = sum(op.weight(item) for op, item in writes)
        if self._pending_rows and self._pending_rows + weight > self.queue_rows:
            async with self._space:
                await self._space.wait_for(
                    lambda: (
                        not self._pending_rows
                        or self._pending_rows + weight <= self.queue_rows
                        or self._closed
                    )
                )
            if self._closed:
                raise WriterClosed("the writer is stopped")
        committer = self._committers[self.committer_of(key, weight)]
        placed = self._placed.get(key)
        self._placed[key] = (committer, 1 if placed is None else placed[1] + 1)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        committer.queue.append(_Submission(writes, weight, future, key))
        committer.queued_rows += weight
        self._pending_rows += weight
        committer.wakeup.set()
        return await future

    def committer_of(self, key: Hashable | None, weight: int = 1) -> int:
        """The committer a submission of ``key`` (of ``weight`` rows) would take now: that of
        the key's submissions not yet committed, else the first gathering a batch with room
        for it, else the first idle one, else the one with the fewest rows queued."""
        placed = self._placed.get(key)
        if placed is not None:
            return placed[0].index
        idle: _Committer | None = None
        for committer in self._committers:
            if committer.current:
                continue  # writing: what joins its queue waits for its COMMIT
            if not committer.queue:
                idle = idle or committer
            elif committer.queued_rows + weight <= self.batch_rows:
                return committer.index
        if idle is not None:
            return idle.index
        return min(self._committers, key=lambda committer: committer.queued_rows).index

    async def _written(self, batch: list[_Submission]) -> None:
        """A committer is done with ``batch`` (committed, refused or failed): its rows free up,
        and its keys may take any committer once none of theirs is left."""
        for submission in batch:
            committer, waiting = self._placed[submission.key]
            if waiting == 1:
                del self._placed[submission.key]
            else:
                self._placed[submission.key] = (committer, waiting - 1)
        self._pending_rows -= sum(s.weight for s in batch)
        async with self._space:
            self._space.notify_all()

    def _count(self, batch: list[_Submission], seconds: float) -> None:
        rows = sum(s.weight for s in batch)
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.submissions += len(batch)
        self.stats.last_commit_seconds = seconds
        self._m_batches.inc()
        self._m_rows.inc(amount=rows)
        self._m_commit.set(seconds)

    def _retried(self) -> None:
        self.stats.retries += 1
        self._m_retries.inc()

    def _rejected(self) -> None:
        self.stats.rejected += 1
        self._m_rejected.inc()

    def _unfiltered(self) -> None:
        self.stats.unfiltered += 1
        self._m_unfiltered.inc()

    async def _wanted(self, conn: asyncpg.Connection) -> outbox.WantedEvents:
        """The events some subscription wants, read on ``conn`` if unknown or older than
        ``_WANTED_MAX_AGE``. A batch that leaves an event out checks that they are current
        (``_Committer._commit``): a subscription that wants more is never missed; one that
        wants less is seen within that age (meanwhile rows nobody wants are written, which the
        fan-out skips), as the check would cost every batch that keeps all its rows."""
        now = asyncio.get_running_loop().time()
        if self.wanted_at is None or now - self.wanted_at > _WANTED_MAX_AGE:
            self.wanted, self.wanted_at = await outbox.read_wanted(conn), now
        return self.wanted

    async def _connect(self) -> asyncpg.Connection:
        # command_timeout: a server that stopped answering (not closed) counts as unavailable.
        return await asyncpg.connect(self.dsn, command_timeout=60)

    def _fail_all(self, exc: Exception) -> None:
        for committer in self._committers:
            for submission in [*committer.current, *committer.queue]:
                if not submission.future.done():
                    submission.future.set_exception(exc)
            committer.queue.clear()
            committer.current = []
            committer.queued_rows = 0
        self._placed.clear()
        self._pending_rows = 0


class _Committer:
    """One committer of a :class:`Writer`: its queue, its task and its connection."""

    def __init__(self, writer: Writer, index: int) -> None:
        self.writer = writer
        self.index = index
        self.queue: collections.deque[_Submission] = collections.deque()
        self.queued_rows = 0
        self.current: list[_Submission] = []  # the batch being written
        self.wakeup = asyncio.Event()
        self.conn: asyncpg.Connection | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_commit_seconds = 0.0
        self._batch_conn: _BatchConnection | None = None  # what the ops get for ``conn``
        self._backend_of: asyncpg.Connection | None = None
        self._backend_id: tuple[int, datetime] = (0, datetime.min)

    def start(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.task = service_task(self._run(), name=f"writer-committer-{self.index}")

    async def close(self) -> None:
        self.task = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 2)
            self.conn = None

    async def _run(self) -> None:
        writer = self.writer
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if writer._stopping:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            # Linger for more submissions, unless the batch is full or we are stopping. When
            # the last batch took longer than the linger itself, the database is the
            # bottleneck and submissions pile up while each batch commits: then linger only
            # for one pass of the loop (the submitters the last commit released submit
            # again), since waiting longer would only idle the database.
            linger = writer.flush_interval
            if self.last_commit_seconds >= linger:
                linger = 0.0
                await asyncio.sleep(0)
            deadline = loop.time() + linger
            while not writer._stopping and self.queued_rows < writer.batch_rows:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self.wakeup.clear()
                await wait_event(self.wakeup, remaining)
            batch = self.current = self._take_batch()
            await self._write_batch(batch)
            self.current = []
            await writer._written(batch)

    def _take_batch(self) -> list[_Submission]:
        batch: list[_Submission] = []
        rows = 0
        limit = self.writer.batch_rows
        while self.queue and (not batch or rows + self.queue[0].weight <= limit):
            submission = self.queue.popleft()
            batch.append(submission)
            rows += submission.weight
        self.queued_rows -= rows
        return batch

    async def _write_batch(self, batch: list[_Submission]) -> None:
        """Commit ``batch`` and resolve its futures; retry while the database is unavailable."""
        delay = 0.05
        unknown: _CommitUnknown | None = None  # an attempt whose COMMIT outcome is not known
        reruns = 0  # runs an op asked for (RetryBatch)
        changed = 0  # filtered runs refused because what is wanted changed (_wanted_changed)
        while True:
            try:
                if unknown is not None and await self._committed(unknown):
                    log.info(
                        "writer: batch %s had committed before the connection was lost",
                        unknown.batch_id,
                    )
                    self.writer._count(batch, 0.0)
                    results = unknown.results
                else:
                    unknown = None
                    results = await self._commit(batch, filtered=changed < _WANTED_RUNS)
            except Exception as exc:
                if _wanted_changed(exc):
                    # Rolled back: a subscription changed what is wanted since the names the
                    # batch filtered its events by. Read them again (_commit) and run it again.
                    self.writer.wanted_at = None
                    changed += 1
                    if changed == _WANTED_RUNS:
                        self.writer._unfiltered()  # its next runs write every event
                    continue
                if isinstance(exc, RetryBatch) and reruns < _RERUNS:
                    reruns += 1  # rolled back; the op takes its careful way this time
                    continue
                if isinstance(exc, _CommitUnknown):
                    unknown = exc
                elif unknown is None and not self._transient(exc):
                    await self._isolate(batch, exc)
                    break
                # While a COMMIT's outcome is unknown, every error is waited out: the batch may
                # have committed, so it is never re-run per submission before that is known.
                self.writer._retried()
                self.writer.health.failed(exc, "the writer")
                await self._drop_connection()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.writer.retry_max_delay)
                continue
            self.writer.health.ok("the writer")
            for submission, result in zip(batch, results, strict=True):
                if not submission.future.done():
                    submission.future.set_result(result)
            break

    def _transient(self, exc: BaseException) -> bool:
        """``is_unavailable`` on this committer's connection: asyncpg's client-side error on a
        connection that is still open is a misuse (an op calling ``conn.transaction()`` inside
        the batch's transaction), not an outage, for retrying it would stall the committer for good;
        and any error after which the batch's transaction could not be rolled back is an outage
        (``_ConnectionBroken``)."""
        closed = self.conn is None or self.conn.is_closed()
        return isinstance(exc, _ConnectionBroken) or is_unavailable(exc, closed=closed)

    async def _committed(self, unknown: _CommitUnknown) -> bool:
        conn = await self._connection()
        # The backend that sent the COMMIT may still be finishing it (waiting for a synchronous
        # standby, say): its outcome is final only once that backend has ended.
        ended = await conn.fetchval(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE pid = $1 AND backend_start = $2 AND pid <> pg_backend_pid()",
            *unknown.backend,
        )
        if ended is False:
            raise ConnectionError("the backend of the unknown COMMIT has not ended yet")
        found = await conn.fetchval(
            "SELECT 1 FROM writer_commits WHERE batch_id = $1", unknown.batch_id
        )
        return found is not None

    async def _commit(self, batch: list[_Submission], filtered: bool) -> list[list[Any]]:
        """Run ``batch``'s ops in one transaction and commit it; its events are kept only if
        wanted (``filtered``), else all written."""
        conn = await self._connection()
        if conn.is_in_transaction():
            # Left inside a transaction by a failure that could not roll it back: a BEGIN would
            # only warn and carry on in it, so this connection is never used again.
            await self._drop_connection()
            conn = await self._connection()
        backend = await self._backend(conn)
        wanted = await self.writer._wanted(conn) if filtered else None
        ops_conn = self._ops_connection(conn)
        batch_id = uuid.uuid4()
        started = time.perf_counter()
        # BEGIN is sent with the ops' first statement's need, or with the COMMIT when they only
        # deferred theirs (_BatchConnection): then the whole batch is one round trip. READ
        # COMMITTED named, whatever the database's default: the check of the events the batch
        # left out relies on a statement's own snapshot (below).
        ops_conn.defer_begin("BEGIN ISOLATION LEVEL READ COMMITTED")
        conn_for_ops = cast(asyncpg.Connection, ops_conn)
        outbox.filter_by(conn_for_ops, wanted)  # None: every event kept, none to check
        try:
            # Each op once on its items of every submission, results back per submission;
            # what they defer to the COMMIT (``before_commit``) goes with it.
            open_tail(conn_for_ops)
            results, ops = await write_grouped(conn_for_ops, [s.writes for s in batch])
        except BaseException as exc:
            take_tail(conn_for_ops)
            if ops_conn.take_begin() is not None:
                raise  # nothing was sent: no transaction to roll back
            if not await self._rolled_back(conn):
                await self._drop_connection()
                if isinstance(exc, Exception):
                    # Whatever the op saw (a closed transport mid-COPY, asyncpg's "cannot
                    # switch to state"), the connection died under it: an outage.
                    raise _ConnectionBroken(exc) from exc
            raise
        tail = take_tail(conn_for_ops)
        begin = ops_conn.take_begin()
        # The batch's id (ours, a literal is safe), with the COMMIT. If the batch left events
        # out by the names it read (ops.outbox.filter_by), the id is written only while those
        # are still all that is wanted, read after the lock that holds back a subscription
        # wanting more until this transaction ends; else it is NULL, which the column refuses
        # (_wanted_changed: the names are read again and the batch runs again).
        batch_row = f"'{batch_id}'::uuid"
        marks = []
        if wanted is not None and outbox.left_out(conn_for_ops):
            batch_row = f"CASE WHEN {outbox.still_wanted_sql(wanted)} THEN {batch_row} END"
            marks.append(outbox.WANTED_LOCK)
        marks.append(f"INSERT INTO writer_commits (batch_id) VALUES ({batch_row})")
        try:
            # One simple query: the BEGIN if no op needed it yet, the deferred statements, then
            # COMMIT (which PostgreSQL does not reach if one of them fails: the batch is then
            # refused, nothing committed).
            self.writer.stats.round_trips += 1
            status = await conn.execute(
                "; ".join([*([begin] if begin else []), *(d.sql for d in tail), *marks, "COMMIT"])
            )
        except Exception as exc:
            # Only an error PostgreSQL itself answered says what became of the COMMIT; any
            # other (the connection lost or broken while it was in flight) leaves it unknown.
            if self._transient(exc) or not isinstance(exc, asyncpg.PostgresError):
                raise _CommitUnknown(batch_id, results, backend, exc) from exc
            if not await self._rolled_back(conn):
                await self._drop_connection()
            # Not committed: an op whose deferred statement met what its careful way
            # resolves (a stored meter value) has the batch run again.
            if asks_rerun(tail, exc):
                raise RetryBatch("a deferred statement asked for another run") from exc
            raise
        if status != "COMMIT":
            # PostgreSQL answers COMMIT of a failed transaction with ROLLBACK, not an error:
            # an op swallowed an error without rolling back to a savepoint of its own. (The
            # batch's writer_commits row, sent before the COMMIT, fails first today; kept in
            # case the row ever moves.)
            raise RuntimeError(f"the batch's transaction was rolled back ({status})")
        for op in ops:
            try:
                op.committed(conn_for_ops)
            except Exception:  # the batch is durable: it is acknowledged whatever an op says
                log.exception("writer: %s.committed failed", op.name)
        self.last_commit_seconds = time.perf_counter() - started
        self.writer._count(batch, self.last_commit_seconds)
        return results

    def _ops_connection(self, conn: asyncpg.Connection) -> _BatchConnection:
        """The ops' view of ``conn`` (the same object for the connection's life)."""
        if self._batch_conn is None or self._batch_conn.raw is not conn:
            self._batch_conn = _BatchConnection(conn, self.writer.stats, self.writer.database)
        return self._batch_conn

    async def _backend(self, conn: asyncpg.Connection) -> tuple[int, datetime]:
        """``conn``'s server process and its start, read once per connection."""
        if self._backend_of is not conn:
            started = await conn.fetchval(
                "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
            self._backend_of, self._backend_id = conn, (conn.get_server_pid(), started)
        return self._backend_id

    @staticmethod
    async def _rolled_back(conn: asyncpg.Connection) -> bool:
        """Roll back ``conn``'s transaction; whether it is now outside any."""
        try:
            await conn.execute("ROLLBACK")
        except Exception:
            return False
        return not conn.is_in_transaction()

    async def _isolate(self, batch: list[_Submission], exc: Exception) -> None:
        """PostgreSQL refused the batch: write each submission alone, failing only the ones
        it refuses."""
        if len(batch) == 1:
            log.error("writer: rows refused by PostgreSQL (%s: %s)", type(exc).__name__, exc)
            self.writer._rejected()
            if not batch[0].future.done():
                rejected = WriteRejected(str(exc))
                rejected.__cause__ = exc
                batch[0].future.set_exception(rejected)
            return
        for submission in batch:
            await self._write_batch([submission])

    async def _connection(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await self.writer._connect()
        return self.conn

    async def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None
