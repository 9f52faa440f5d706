"""A handler's database failure at the gateway: an outage (the connection killed under the
query) leaves the CALL unanswered and is reported to the database's health (one WARNING);
a bug (a query with a wrong argument count) is answered InternalError and logged with its
traceback, never mistaken for an outage and retried by the charger for ever."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
import pytest

from evgate.gateway.basic_routes import basic_routes
from evgate.handlers import ChargerContext, Routes
from evgate.protocol.v16 import DataTransferRequest, DataTransferResponse, DataTransferStatus
from evgate.storage.db import Database
from support import terminate_query, until

from .helpers import StartGateway, connect


def _routes(db: Database) -> Routes:
    async def data_transfer(
        ctx: ChargerContext, request: DataTransferRequest
    ) -> DataTransferResponse:
        if request.message_id == "bug":
            await db.pool.fetchval("SELECT $1::int", 1, 2)
        else:
            await db.pool.fetchval("SELECT pg_sleep(60) /* to be killed */")
        return DataTransferResponse(status=DataTransferStatus.accepted)

    return {**basic_routes(), "DataTransfer": data_transfer}


async def _recv(ws: Any) -> list[Any]:
    async with asyncio.timeout(10):
        return list(json.loads(await ws.recv()))


async def test_a_wrong_argument_count_is_internal_error_with_a_traceback(
    start_gateway: StartGateway, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with start_gateway(routes=_routes(db), database=db) as g, connect(g.url()) as ws:
        await ws.send(json.dumps([2, "b", "DataTransfer", {"vendorId": "v", "messageId": "bug"}]))
        answer = await _recv(ws)
    assert answer[:3] == [4, "b", "InternalError"]
    failed = [r for r in caplog.records if "the DataTransfer handler failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR and failed[0].exc_info
    assert isinstance(failed[0].exc_info[1], asyncpg.InterfaceError)
    assert db.health.available  # a bug is no outage
    assert g.gateway.m_refused.value("unavailable") == 0


async def test_a_connection_killed_under_a_handler_leaves_the_call_unanswered_and_warns_once(
    start_gateway: StartGateway, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with start_gateway(routes=_routes(db), database=db) as g, connect(g.url()) as ws:
        for count, uid in enumerate(("k1", "k2"), start=1):
            await ws.send(json.dumps([2, uid, "DataTransfer", {"vendorId": "v", "messageId": uid}]))
            await terminate_query(db, "to be killed")
            await until(lambda n=count: g.gateway.m_refused.value("unavailable") == n, 10)
        # The next CALL is answered: the killed ones were left unanswered, not answered late.
        await ws.send(json.dumps([2, "h", "Heartbeat", {}]))
        answer = await _recv(ws)
    assert answer[:2] == [3, "h"]
    assert not db.health.available  # the outage is the database's, seen by the handler
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "PostgreSQL unavailable" in warnings[0].getMessage()
    assert "the DataTransfer handler" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
