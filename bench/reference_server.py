"""bench: a reference central system, built the usual Python way, to measure evgate against.

The ``ocpp`` library's ChargePoint (ocpp 2.1.0, ``ocpp.v16``) with one ``@on`` handler per
action, each connection served by a ``websockets`` server, every message stored in PostgreSQL
with plain INSERT/UPDATE statements through an asyncpg pool before it is answered. It does
the work evgate does for what the fleet simulator sends:

* the upgrade checks ``/cp/{id}?auth={secret}`` against SHA-256 digests held in memory
  (loaded from its ``chargers`` table at start), in constant time, and negotiates ``ocpp1.6``;
* BootNotification updates the charger's row and answers Accepted with the heartbeat interval;
* StatusNotification inserts a status row; Heartbeat answers at once;
* Authorize looks the id tag up in ``id_tags``;
* StartTransaction inserts a transaction (its id is the answer); StopTransaction updates it
  and stores its transaction data;
* MeterValues inserts one ``meter_values`` row per sampled value (value as float8, as evgate
  stores them).

The library validates every request and response against the OCPP JSON schemas (its
default). It runs on uvloop, as evgate does, so the difference measured is the design, not
the event loop. Start it with ``python bench/reference_server.py --dsn URL --port 9100``; it
prints ``ready <port>`` once it listens, and stops on SIGTERM or SIGINT.
"""

# The ocpp library ships no type information: its ChargePoint and @on are Any to mypy.
# mypy: disable-error-code="misc, untyped-decorator"

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import http
import logging
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import uvloop
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result, datatypes
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS chargers (
    id            text PRIMARY KEY,
    secret_digest bytea NOT NULL,
    vendor        text,
    model         text,
    firmware      text,
    booted_at     timestamptz
);
CREATE TABLE IF NOT EXISTS id_tags (
    id_tag text PRIMARY KEY,
    status text NOT NULL DEFAULT 'Accepted'
);
CREATE TABLE IF NOT EXISTS status_notifications (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id   text NOT NULL,
    connector_id int NOT NULL,
    status       text NOT NULL,
    error_code   text NOT NULL,
    ts           timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS transactions (
    id           int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charger_id   text NOT NULL,
    connector_id int NOT NULL,
    id_tag       text NOT NULL,
    meter_start  bigint NOT NULL,
    started_at   timestamptz NOT NULL,
    meter_stop   bigint,
    stopped_at   timestamptz,
    reason       text
);
CREATE TABLE IF NOT EXISTS meter_values (
    charger_id     text NOT NULL,
    connector_id   int NOT NULL,
    transaction_id int,
    ts             timestamptz NOT NULL,
    measurand      text NOT NULL,
    phase          text,
    unit           text,
    value          float8 NOT NULL
);
CREATE INDEX IF NOT EXISTS meter_values_charger_ts ON meter_values (charger_id, ts);
"""

_INSERT_METER = (
    "INSERT INTO meter_values (charger_id, connector_id, transaction_id, ts, measurand, phase,"
    " unit, value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)

log = logging.getLogger("reference")


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _meter_rows(
    charger_id: str, connector_id: int, transaction_id: int | None, values: list[dict[str, Any]]
) -> list[tuple[Any, ...]]:
    return [
        (
            charger_id,
            connector_id,
            transaction_id,
            _ts(mv["timestamp"]),
            sv.get("measurand", "Energy.Active.Import.Register"),
            sv.get("phase"),
            sv.get("unit", "Wh"),
            float(sv["value"]),
        )
        for mv in values
        for sv in mv["sampled_value"]
    ]


async def register(dsn: str, chargers: list[tuple[str, bytes]], id_tags: list[str]) -> None:
    """Create the tables and register chargers (id, SHA-256 digest of the secret) and
    accepted id tags, in bulk (COPY). Do this before the server starts: it loads the
    digests once, at start."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.copy_records_to_table(
            "chargers", records=chargers, columns=["id", "secret_digest"]
        )
        await conn.copy_records_to_table(
            "id_tags", records=[(t,) for t in id_tags], columns=["id_tag"]
        )
    finally:
        await conn.close()


class ReferenceChargePoint(ChargePoint):
    """One connected charger, handled as the ``ocpp`` library's examples do."""

    def __init__(self, charger_id: str, connection: ServerConnection, server: Server) -> None:
        super().__init__(charger_id, connection)
        self.server = server
        self.db = server.pool

    @on(Action.boot_notification)
    async def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **kwargs: Any
    ) -> call_result.BootNotification:
        await self.db.execute(
            "UPDATE chargers SET vendor = $2, model = $3, firmware = $4, booted_at = now()"
            " WHERE id = $1",
            self.id,
            charge_point_vendor,
            charge_point_model,
            kwargs.get("firmware_version"),
        )
        return call_result.BootNotification(
            current_time=_now(),
            interval=self.server.heartbeat_interval,
            status=RegistrationStatus.accepted,
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    async def on_status_notification(
        self, connector_id: int, error_code: str, status: str, **kwargs: Any
    ) -> call_result.StatusNotification:
        timestamp = kwargs.get("timestamp")
        await self.db.execute(
            "INSERT INTO status_notifications (charger_id, connector_id, status, error_code, ts)"
            " VALUES ($1, $2, $3, $4, $5)",
            self.id,
            connector_id,
            status,
            error_code,
            _ts(timestamp) if timestamp else None,
        )
        return call_result.StatusNotification()

    async def _id_tag_info(self, id_tag: str) -> datatypes.IdTagInfo:
        status = await self.db.fetchval("SELECT status FROM id_tags WHERE id_tag = $1", id_tag)
        return datatypes.IdTagInfo(status=AuthorizationStatus(status or "Invalid"))

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info=await self._id_tag_info(id_tag))

    @on(Action.start_transaction)
    async def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kwargs: Any
    ) -> call_result.StartTransaction:
        info = await self._id_tag_info(id_tag)
        transaction_id = await self.db.fetchval(
            "INSERT INTO transactions (charger_id, connector_id, id_tag, meter_start, started_at)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            self.id,
            connector_id,
            id_tag,
            meter_start,
            _ts(timestamp),
        )
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info=info)

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **kwargs: Any
    ) -> call_result.StopTransaction:
        async with self.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE transactions SET meter_stop = $2, stopped_at = $3, reason = $4"
                " WHERE id = $1 RETURNING connector_id",
                transaction_id,
                meter_stop,
                _ts(timestamp),
                kwargs.get("reason"),
            )
            data = kwargs.get("transaction_data")
            if data and row is not None:
                await conn.executemany(
                    _INSERT_METER, _meter_rows(self.id, row[0], transaction_id, data)
                )
        return call_result.StopTransaction()

    @on(Action.meter_values)
    async def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any
    ) -> call_result.MeterValues:
        rows = _meter_rows(self.id, connector_id, kwargs.get("transaction_id"), meter_value)
        await self.db.executemany(_INSERT_METER, rows)
        return call_result.MeterValues()


class Server:
    """The websockets server, the asyncpg pool and the in-memory charger credentials."""

    def __init__(self, dsn: str, heartbeat_interval: int, pool_size: int) -> None:
        self.dsn = dsn
        self.heartbeat_interval = heartbeat_interval
        self.pool_size = pool_size
        self.digests: dict[str, bytes] = {}
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "call open() first"
        return self._pool

    async def open(self) -> None:
        """Create the tables if missing, open the pool, load the chargers' digests."""
        self._pool = await asyncpg.create_pool(self.dsn, min_size=2, max_size=self.pool_size)
        await self.pool.execute(SCHEMA)
        rows = await self.pool.fetch("SELECT id, secret_digest FROM chargers")
        self.digests = {r["id"]: bytes(r["secret_digest"]) for r in rows}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        """websockets' process_request hook: refuse unknown chargers and wrong secrets."""
        url = urlsplit(request.path)
        parts = url.path.split("/")
        if len(parts) != 3 or parts[1] != "cp" or not parts[2]:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        secret = parse_qs(url.query).get("auth", [""])[0]
        stored = self.digests.get(parts[2])
        presented = hashlib.sha256(secret.encode()).digest()
        if stored is None or not hmac.compare_digest(presented, stored):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        return None

    async def handle(self, connection: ServerConnection) -> None:
        if connection.subprotocol != "ocpp1.6":
            await connection.close(1002, "subprotocol ocpp1.6 required")
            return
        assert connection.request is not None
        charger_id = urlsplit(connection.request.path).path.split("/")[2]
        charge_point = ReferenceChargePoint(charger_id, connection, self)
        try:
            await charge_point.start()
        except ConnectionClosed:
            pass

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[int]:
        """Listen on ``host:port`` (0: any free port) until the block ends; yields the port."""
        async with serve(
            self.handle,
            host,
            port,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            process_request=self.check_upgrade,
            # evgate's defaults for keep-alive, so both servers ping alike.
            ping_interval=60,
            ping_timeout=30,
            backlog=4096,
        ) as ws_server:
            yield next(iter(ws_server.sockets)).getsockname()[1]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="PostgreSQL URL (tables are created)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--heartbeat-interval", type=int, default=60)
    # evgate's default pool size, so both have the same number of database connections.
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    server = Server(args.dsn, args.heartbeat_interval, args.pool_size)
    await server.open()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with server.serving(args.host, args.port) as port:
            print(f"ready {port}", flush=True)
            await stopping.wait()
    finally:
        await server.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:]))
