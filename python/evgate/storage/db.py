"""storage room: the connection pool and the migrations.

Migrations are the numbered ``.sql`` files beside this module, applied in order, each in its
own transaction, under an advisory lock so that several evgate processes starting at once apply
each exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextvars import ContextVar
from importlib import resources
from types import TracebackType
from typing import Any, NoReturn

import asyncpg
from asyncpg.pool import PoolAcquireContext

from evgate.outages import Dependency, RepeatFilter, quiet_repeats
from evgate.storage.errors import DatabaseUnavailable, is_unavailable
from evgate.tasks import cancel_and_wait, service_task

__all__ = [
    "Database",
    "Listener",
    "Pool",
    "acting_for",
    "apply_migrations",
    "migration_files",
    "tenant",
]

log = logging.getLogger(__name__)

_MIGRATIONS_LOCK = 0x65766761  # 'evga': any fixed key that no other code uses
CHARGER_CHANNEL = "evgate_charger"  # NOTIFY payload: the charger id whose credentials changed

# asyncpg's pool logs a traceback each time it fails to reconnect its minimum of connections
# (every pool, a few times a second while PostgreSQL is away): one line a minute, no traceback.
_ASYNCPG_REPEATS = RepeatFilter(tracebacks=False)


def migration_files() -> list[tuple[str, str]]:
    """The migrations as (version, sql), in the order they apply."""
    folder = resources.files("evgate.storage") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations that ``conn``'s database lacks.

    Returns:
        The versions applied now (empty when the database was current).
    """
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATIONS_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
            log.info("applied migration %s", version)
    return applied_now


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as text: msgspec encodes and decodes it, faster than asyncpg's json.
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: v, decoder=lambda v: v, schema="pg_catalog"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The operator pool's ``reset`` on release: nothing beyond what asyncpg always does first
    (a transaction left open is rolled back, the connection's listeners dropped).

    asyncpg's default also sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: a second round trip, and four statements for PostgreSQL to
    parse and run, for every query made through the pool (a stream's cursor move, a claim, an
    API read). It was 6 % of evgate's CPU with 20 webhook streams (bench/README.md). It undoes
    session state that evgate never leaves on these connections: settings are set for the
    transaction only (``set_config(..., true)``), advisory locks are taken per transaction,
    LISTEN runs on connections of its own (:class:`Listener`) and cursors live inside
    transactions; ``tests/test_sourcecode.py`` keeps the code that way. The tenant pool keeps
    asyncpg's reset (its ``setup`` sets the role for the session).
    """


#: The sub-operator the current request acts for (None: the operator). Set by the edge that
#: authenticated the request (:func:`acting_for`); every query of the storage room made in
#: that context then runs on the tenant pool, as the database's tenant role that PostgreSQL's
#: row-level security confines to the tenant's rows (migration 0020).
_TENANT: ContextVar[int | None] = ContextVar("evgate_tenant", default=None)


@contextlib.contextmanager
def acting_for(sub_operator_id: int | None) -> Iterator[None]:
    """Within the block, the storage room's queries see only ``sub_operator_id``'s rows (all
    rows when None). Tasks created in the block inherit it, as contextvars are copied."""
    token = _TENANT.set(sub_operator_id)
    try:
        yield
    finally:
        _TENANT.reset(token)


def tenant() -> int | None:
    """The sub-operator the current context acts for (None: the operator)."""
    return _TENANT.get()


def _tenant_setup(role: str) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """The tenant pool's ``setup``: ``role`` is this database's tenant role (migration 0020's
    ``evgate_tenant_role()``)."""

    async def setup(conn: asyncpg.Connection) -> None:
        # On every acquire, in the acquiring task's context: the role and the tenant together,
        # whatever the connection did before (a setting is session-wide, and RESET ALL, which
        # asyncpg runs on release, leaves the role as it is). No tenant ('' -> NULL) sees
        # nothing.
        sub_operator = _TENANT.get()
        await conn.execute(
            "SELECT set_config('role', $1, false), set_config('evgate.sub_operator', $2, false)",
            role,
            "" if sub_operator is None else str(sub_operator),
        )

    return setup


class Listener:
    """``LISTEN channel`` on a dedicated connection that comes back when it drops.

    ``on_notify(payload)`` is called for each notification; ``on_reconnect()`` after the
    connection was re-established, because notifications sent while it was down are lost and
    the subscriber must re-read what it keeps in sync. Both run on the loop and must not block.
    Made by :meth:`Database.listen`, closed with it.
    """

    RETRY_MIN = 0.2
    RETRY_MAX = 5.0

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None] | None = None,
        health: Dependency | None = None,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.health = health or Dependency("PostgreSQL", is_unavailable)
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_notify(payload)
        except Exception:
            log.exception("listener on %s failed on %r", self.channel, payload)

    def _terminated(self, _conn: Any) -> None:
        self._lost.set()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.add_listener(self.channel, self._notified)
        except BaseException as exc:
            # A server that drops the connection it just opened (it is shutting down) makes
            # LISTEN fail with asyncpg's client-side errors ("connection is closed", "cannot
            # switch to state"): an outage, as the closed connection says, to be retried with
            # one line, not a traceback per attempt. Terminated, not closed: closing waits on
            # a server that may not answer, and its error would hide this one.
            closed = conn.is_closed()
            conn.terminate()
            if isinstance(exc, Exception) and (typed := _typed(exc, closed)) is not exc:
                raise typed from exc
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        self._lost.clear()

    async def start(self) -> None:
        """Connect and LISTEN (raises if the database is unreachable now)."""
        await self._connect()
        self._task = service_task(self._keep_up(), name=f"listen-{self.channel}")

    async def _keep_up(self) -> None:
        retry = self.health.retry(f"LISTEN {self.channel}", log, self.RETRY_MIN, self.RETRY_MAX)
        while True:
            await self._lost.wait()
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            try:
                await self._connect()
            except Exception as exc:  # any failure: keep trying, the subscriber depends on it
                await asyncio.sleep(retry.failed(exc))
                continue
            retry.ok()
            log.debug("LISTEN %s: reconnected", self.channel)
            if self._on_reconnect is not None:
                try:
                    self._on_reconnect()
                except Exception:
                    log.exception("listener on %s failed after reconnecting", self.channel)

    def drop_connection(self) -> None:
        """Terminate the connection as a network fault would (tests of the reconnect path)."""
        if self._conn is not None:
            self._conn.terminate()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.remove_termination_listener(self._terminated)
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


def _typed(exc: BaseException, closed: bool = False) -> BaseException:
    """``exc``, or a DatabaseUnavailable caused by it when it says the database is away
    (``is_unavailable``; ``closed``: the connection or pool it was raised on is closed now)."""
    if isinstance(exc, DatabaseUnavailable) or not is_unavailable(exc, closed=closed):
        return exc
    typed = DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__}: {exc})")
    typed.__cause__ = exc
    return typed


def _raise_typed(exc: Exception, closed: bool) -> NoReturn:
    """Raise ``exc``, or the DatabaseUnavailable it says (see :func:`_typed`)."""
    typed = _typed(exc, closed)
    if typed is exc:
        raise exc
    raise typed from exc


async def _typed_errors(
    acquiring: Awaitable[asyncpg.Connection], pool: asyncpg.Pool
) -> asyncpg.Connection:
    try:
        return await acquiring
    except Exception as exc:
        _raise_typed(exc, pool.is_closing())


def _is_closed(conn: asyncpg.Connection) -> bool:
    """Whether the pool's connection ``conn`` is closed. asyncpg takes a connection that closed
    (lost, terminated) back into the pool at once, and its proxy then refuses every call, even
    ``is_closed()``: that refusal says it closed."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


class _Acquire:
    """``Pool.acquire()``: asyncpg's acquire context, whose connection failures (in acquiring,
    or in the block) leave it as :class:`DatabaseUnavailable`."""

    __slots__ = ("_conn", "_inner")

    def __init__(self, inner: PoolAcquireContext) -> None:
        self._inner = inner
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await _typed_errors(self._inner.__aenter__(), self._inner.pool)
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whether the connection died under the block (or the pool is closing), asked before
        # the connection is given back: only then is asyncpg's client-side error an outage.
        closed = self._inner.pool.is_closing() or (
            self._conn is not None and _is_closed(self._conn)
        )
        try:
            await self._inner.__aexit__(exc_type, exc, tb)  # gives the connection back
        except Exception as failed:
            # Resetting the connection to give it back failed (asyncpg closed it). After an
            # error of the block's own, that error says what happened (a server gone mid-query
            # leaves the connection mid-operation, and its reset fails: "cannot switch to
            # state ..."); evgate's bug stays a bug.
            if not isinstance(exc, Exception):
                _raise_typed(failed, closed)
        if isinstance(exc, Exception) and (typed := _typed(exc, closed)) is not exc:
            raise typed

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return _typed_errors(self._inner, self._inner.pool).__await__()


class Pool:
    """The process's asyncpg pool, as the storage room's queries use it: a connection error
    (refused, lost, the server shutting down, no connection in time) leaves it as the typed
    :class:`DatabaseUnavailable`, which the edges map (the API to 503)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.raw = pool

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        """``async with pool.acquire() as conn`` (or ``await`` it, then :meth:`release`)."""
        return _Acquire(self.raw.acquire(timeout=timeout))

    async def release(self, conn: asyncpg.Connection) -> None:
        await self.raw.release(conn)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.acquire() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    async def close(self) -> None:
        await self.raw.close()


class Database:
    """The asyncpg pool of one evgate process. ``await open()`` before use, ``close()`` after."""

    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        #: PostgreSQL as this process sees it: every loop that uses the database reports its
        #: failures and successes here (one WARNING per outage, one INFO at its end).
        self.health = Dependency("PostgreSQL", is_unavailable)
        quiet_repeats("asyncpg", _ASYNCPG_REPEATS)
        self._pool: Pool | None = None
        self._tenant_pool: Pool | None = None
        self._listeners: list[Listener] = []

    @property
    def pool(self) -> Pool:
        """The pool for the current context: the tenant pool inside :func:`acting_for` a
        sub-operator, else the operator's."""
        if self._pool is None or self._tenant_pool is None:
            raise RuntimeError("Database.open() was not awaited")
        return self._pool if _TENANT.get() is None else self._tenant_pool

    async def open(self, migrate: bool = True) -> None:
        """Connect, and apply pending migrations unless ``migrate`` is false."""
        if migrate:
            conn = await asyncpg.connect(self.dsn)
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
        self._pool = Pool(
            await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                init=_init_connection,
                reset=_keep_session,
            )
        )
        # Scoped API requests only: no connection until one comes.
        role = await self._pool.fetchval("SELECT evgate_tenant_role()")
        self._tenant_pool = Pool(
            await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=max(1, self.pool_size // 2),
                init=_init_connection,
                setup=_tenant_setup(role),
            )
        )

    async def listen(
        self,
        channel: str,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None] | None = None,
    ) -> Listener:
        """LISTEN on ``channel`` on a dedicated connection, until :meth:`close`.

        See :class:`Listener` for the callbacks' contract.
        """
        listener = Listener(self.dsn, channel, on_notify, on_reconnect, self.health)
        await listener.start()
        self._listeners.append(listener)
        return listener

    async def close(self) -> None:
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()
        for pool in (self._pool, self._tenant_pool):
            if pool is not None:
                await pool.close()
        self._pool = self._tenant_pool = None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self.pool.execute(sql, *args)
        return status
