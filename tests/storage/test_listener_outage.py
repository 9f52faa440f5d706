"""A LISTEN connection through a real PostgreSQL outage: it logs the outage as every other
user of the database does (one WARNING, one INFO), never a traceback per reconnect attempt."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from evgate.storage.db import Database, Listener
from evgate.storage.embedded import EmbeddedPostgres
from support import until


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_listener_reconnects_through_an_outage_in_two_lines(
    private_pg: tuple[EmbeddedPostgres, str], caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """PostgreSQL stopped while a listener's connection is open, kept away for several of its
    reconnect attempts, then started again: the listener is back (a NOTIFY reaches it), and
    evgate logged one WARNING and one INFO, with no traceback."""
    pg, dsn = private_pg
    db = Database(dsn, pool_size=2)
    await db.open(migrate=False)
    payloads: list[str] = []
    reconnected = asyncio.Event()
    try:
        await db.listen("evgate_test", payloads.append, reconnected.set)
        caplog.set_level(logging.DEBUG, logger="evgate")
        await asyncio.to_thread(pg.stop, mode)
        # Several attempts fail (the first after 0.2 s, then doubling to 5 s).
        await until(lambda: db.health.failures >= 4, within=30)
        await asyncio.to_thread(pg.restart_same_port)
        await asyncio.wait_for(reconnected.wait(), 30)
        await db.execute("NOTIFY evgate_test, 'back'")
        await until(lambda: payloads == ["back"])
    finally:
        await db.close()
    evgate = [r for r in caplog.records if r.name.startswith("evgate")]
    assert [r.getMessage() for r in evgate if r.exc_info] == []
    loud = [r.getMessage() for r in evgate if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "PostgreSQL unavailable" in loud[0], loud
    assert len([r for r in evgate if "PostgreSQL available again" in r.getMessage()]) == 1


def _error_response(*fields: tuple[bytes, str]) -> bytes:
    """A PostgreSQL ErrorResponse message of ``fields`` (code byte, text)."""
    body = b"".join(code + text.encode() + b"\0" for code, text in fields) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


SHUTTING_DOWN = _error_response(
    (b"S", "FATAL"),
    (b"V", "FATAL"),
    (b"C", "57P01"),
    (b"M", "terminating connection due to administrator command"),
)


class DroppingRelay:
    """A TCP relay on loopback to a real PostgreSQL that, while ``dropping``, ends each new
    connection as soon as the server said it is ready for queries, with the FATAL of a fast
    shutdown: what a client meets of a server that accepted its connection as it went down
    (every time, where a real shutdown leaves it to a race)."""

    # ReadyForQuery, idle: the end of a connection's startup.
    READY = b"Z\x00\x00\x00\x05I"

    def __init__(self, port: int) -> None:
        self.port = port
        self.dropping = False
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen; returns the relay's port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        drop = self.dropping

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, watch: bool) -> None:
            seen = b""
            try:
                while data := await src.read(65536):
                    seen = seen[-len(self.READY) :] + data
                    if watch and drop and self.READY in seen:
                        # As PostgreSQL's fast shutdown ends an idle connection: FATAL, close.
                        dst.write(data + SHUTTING_DOWN)
                        await dst.drain()
                        self.dropped += 1
                        break
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                client_w.close()
                server_w.close()

        for task in (
            asyncio.create_task(pipe(client_r, server_w, watch=False)),
            asyncio.create_task(pipe(server_r, client_w, watch=True)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


async def test_a_listener_on_a_server_that_drops_new_connections_logs_two_lines(
    private_pg: tuple[EmbeddedPostgres, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A LISTEN connection lost, and for several reconnect attempts each new connection ended
    by the server's shutdown FATAL right after it opened (LISTEN then fails with asyncpg's
    client-side "cannot switch to state" error, an outage since the connection is closed):
    one WARNING and one INFO once connections stay up, no traceback per attempt."""
    pg, dsn = private_pg
    assert pg.port is not None
    relay = DroppingRelay(pg.port)
    relayed = dsn.replace(f":{pg.port}/", f":{await relay.start()}/")
    db = Database(dsn, pool_size=2)
    await db.open(migrate=False)
    payloads: list[str] = []
    reconnected = asyncio.Event()
    try:
        listener = Listener(relayed, "evgate_test", payloads.append, reconnected.set, db.health)
        await listener.start()
        try:
            caplog.set_level(logging.DEBUG, logger="evgate")
            relay.dropping = True
            listener.drop_connection()
            await until(lambda: relay.dropped >= 4, within=30)
            relay.dropping = False
            await asyncio.wait_for(reconnected.wait(), 30)
            await db.execute("NOTIFY evgate_test, 'back'")
            await until(lambda: payloads == ["back"])
        finally:
            await listener.close()
    finally:
        await db.close()
        await relay.close()
    evgate = [r for r in caplog.records if r.name.startswith("evgate")]
    assert [f"{r.getMessage()} {r.exc_info[1]!r}" for r in evgate if r.exc_info] == []
    loud = [r.getMessage() for r in evgate if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "PostgreSQL unavailable" in loud[0], loud
    assert len([r for r in evgate if "PostgreSQL available again" in r.getMessage()]) == 1
