"""The handlers' events are written with the state they describe, and only for a change: a
resent or stale message, which changes nothing, emits nothing."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from evgate.config import load_settings
from evgate.gateway.server import Gateway
from evgate.handlers import ChargerContext
from evgate.handlers.smart_charging import SmartCharging
from evgate.protocol.v16 import (
    ChargePointErrorCode,
    ChargePointStatus,
    MeterValue,
    MeterValuesRequest,
    SampledValue,
    SecurityEventNotificationRequest,
    StatusNotificationRequest,
)
from evgate.storage.circuits import CircuitStore
from evgate.storage.db import Database
from evgate.storage.embedded import EmbeddedPostgres
from evgate.storage.ops.transactions import TransactionFacts
from support import until

from .handler_bench import Bench
from .test_transaction_handlers import T0, start, stop


async def outbox(bench: Bench) -> list[tuple[str, dict[str, Any]]]:
    """The outbox in order, without the registry's events (the bench registers CP-1)."""
    rows = await bench.rows(
        "SELECT event, payload FROM outbox WHERE event NOT IN"
        " ('chargePoint.changed', 'ChargePointChangedNotification') ORDER BY id"
    )
    return [(r[0], msgspec.json.decode(r[1])) for r in rows]


async def names(bench: Bench) -> list[str]:
    return [name for name, _ in await outbox(bench)]


def status(connector: int, at_minute: int, state: str = "Available") -> StatusNotificationRequest:
    return StatusNotificationRequest(
        connector_id=connector,
        error_code=ChargePointErrorCode("NoError"),
        status=ChargePointStatus(state),
        timestamp=T0 + timedelta(minutes=at_minute),
    )


async def test_a_resent_start_or_stop_emits_its_events_once(bench: Bench) -> None:
    """The StartTransaction that makes a transaction emits the start events; its resend gets
    the same id and emits nothing. Likewise the stop, with one CDR."""
    first = await bench.call("StartTransaction", start())
    again = await bench.call("StartTransaction", start())
    assert first.transaction_id == again.transaction_id
    started = [
        "SessionStartStopNotification",
        "session.start.stop.notification",
        "SessionUpdateNotification",
        "transaction.changed",
    ]
    assert await names(bench) == started
    await bench.call("StopTransaction", stop(first.transaction_id))
    await bench.call("StopTransaction", stop(first.transaction_id))
    stopped = [*started, "cdr.received"]
    assert await names(bench) == started + stopped
    assert len(await bench.rows("SELECT * FROM cdrs")) == 1


async def test_status_events_follow_what_the_status_write_did(bench: Bench) -> None:
    """A connector's first status emits evse.changed (created) then HardwareStatus; a newer
    one only HardwareStatus; an older one, which is not stored, nothing. Connector 0 (the
    charger) is no EVSE."""
    await bench.call("StatusNotification", status(1, 1))
    await bench.call("StatusNotification", status(1, 3, "Charging"))
    await bench.call("StatusNotification", status(1, 2, "Faulted"))  # late: changes nothing
    await bench.call("StatusNotification", status(0, 1))
    events = await outbox(bench)
    assert [name for name, _ in events] == [
        "evse.changed",
        "HardwareStatusNotification",
        "HardwareStatusNotification",
        "HardwareStatusNotification",
    ]
    assert [p.get("evseId") for _, p in events] == [1, 1, 1, None]
    assert [p.get("hardwareStatus") for _, p in events[1:]] == [
        "available",
        "charging",
        "available",
    ]


async def test_a_resent_security_event_emits_once(bench: Bench) -> None:
    """SecurityEventNotification is stored once per (type, timestamp), and so emitted once."""
    request = SecurityEventNotificationRequest(type="FirmwareUpdated", timestamp=T0)
    await bench.call("SecurityEventNotification", request)
    await bench.call("SecurityEventNotification", request)
    assert await names(bench) == ["SecurityEventNotification"]


async def test_meter_values_emit_session_events_only_inside_an_open_transaction(
    bench: Bench,
) -> None:
    """MeterValues of an open transaction emit SessionMeterValues and SessionUpdate, with the
    energy so far read back from the database by a new connection; without a transaction, or
    after its stop, nothing."""

    def meter(wh: str, tx: int | None, minute: int) -> MeterValuesRequest:
        value = MeterValue(timestamp=T0 + timedelta(minutes=minute),
                           sampled_value=[SampledValue(value=wh)])  # fmt: skip
        extra = {} if tx is None else {"transaction_id": tx}
        return MeterValuesRequest(connector_id=1, meter_value=[value], **extra)  # type: ignore[arg-type]

    tx = (await bench.call("StartTransaction", start(meter=1000))).transaction_id
    await bench.call("MeterValues", meter("1500", None, 1))
    await bench.call("MeterValues", meter("1800", tx, 2))
    # Each bench.call is a new connection: this one knows the energy only from the database.
    await bench.call("MeterValues", meter("not a number", tx, 3))
    await bench.call("StopTransaction", stop(tx))
    await bench.call("MeterValues", meter("2500", tx, 4))  # late: the transaction is closed
    events = [(n, p) for n, p in await outbox(bench) if n.startswith("Session")]
    assert [n for n, _ in events] == [
        "SessionStartStopNotification",
        "SessionUpdateNotification",
        "SessionMeterValuesNotification",
        "SessionUpdateNotification",
        "SessionUpdateNotification",
        "SessionStartStopNotification",
        "SessionUpdateNotification",
    ]
    assert [p["session"]["energy"] for n, p in events if n == "SessionUpdateNotification"] == [
        0.0,
        800.0,
        800.0,
        5000.0,
    ]


async def test_id_tag_changes_emit_with_the_id_tags_number(bench: Bench) -> None:
    """Creating, updating and deleting an id-tag each append idTag.changed in its transaction,
    ``idTagsId`` being the id-tag's number."""
    await bench.id_tags.create("CARD")
    [number] = [r[0] for r in await bench.rows("SELECT number FROM id_tags")]
    await bench.id_tags.update("card", status="Blocked")
    await bench.id_tags.delete("CARD")
    events = await outbox(bench)
    assert [(n, p["idTagsId"], p["action"]) for n, p in events] == [
        ("idTag.changed", number, "created"),
        ("idTag.changed", number, "updated"),
        ("idTag.changed", number, "deleted"),
    ]


def sampled(tx: int, *values: tuple[int, str, str]) -> MeterValuesRequest:
    """MeterValues of ``tx``: one MeterValue per (minute, measurand, value)."""
    meter_values = [
        MeterValue(
            timestamp=T0 + timedelta(minutes=minute),
            sampled_value=[
                SampledValue(
                    value=value,
                    measurand=measurand,
                    unit="Wh" if measurand.startswith("Energy") else "W",
                )
            ],  # type: ignore[arg-type]
        )
        for minute, measurand, value in values
    ]
    return MeterValuesRequest(connector_id=1, transaction_id=tx, meter_value=meter_values)


ENERGY, POWER = "Energy.Active.Import.Register", "Power.Active.Import"


async def meter_events(bench: Bench) -> list[tuple[str, dict[str, Any]]]:
    return [
        (n, p)
        for n, p in await outbox(bench)
        if n in ("SessionMeterValuesNotification", "SessionUpdateNotification")
    ]


async def test_a_resent_meter_values_emits_its_events_once(bench: Bench) -> None:
    """A MeterValues whose answer was lost is sent again (and once more, both copies in one
    batch, as after a reconnect during an outage): its values are stored once and its
    SessionMeterValues and SessionUpdate events are emitted once; the resends emit nothing."""
    tx = (await bench.call("StartTransaction", start(meter=1000))).transaction_id
    before = len(await meter_events(bench))
    request = sampled(tx, (1, ENERGY, "1500"), (1, POWER, "7000"))
    await bench.call("MeterValues", request)
    await bench.call("MeterValues", request)  # the first answer was lost
    later = sampled(tx, (2, ENERGY, "1600"))
    await asyncio.gather(*(bench.call("MeterValues", later) for _ in range(2)))
    events = (await meter_events(bench))[before:]
    assert [n for n, _ in events] == [
        "SessionMeterValuesNotification",
        "SessionUpdateNotification",
        "SessionMeterValuesNotification",
        "SessionUpdateNotification",
    ]
    assert [len(p["meterValues"]) for n, p in events if n.startswith("SessionMeter")] == [2, 1]
    assert await bench.rows("SELECT count(*) FROM meter_values") == [(3,)]


async def test_a_resend_with_a_new_value_emits_only_the_new_value(bench: Bench) -> None:
    """A MeterValues sent again with one more value than its first copy (a charger that
    rebuilt its message): SessionMeterValuesNotification holds only the value not sent
    before, and SessionUpdate the state after the message."""
    tx = (await bench.call("StartTransaction", start(meter=1000))).transaction_id
    await bench.call("MeterValues", sampled(tx, (1, ENERGY, "1500")))
    before = len(await meter_events(bench))
    await bench.call("MeterValues", sampled(tx, (1, ENERGY, "1500"), (2, ENERGY, "1700")))
    events = (await meter_events(bench))[before:]
    assert [n for n, _ in events] == ["SessionMeterValuesNotification", "SessionUpdateNotification"]
    [values] = [p["meterValues"] for n, p in events if n.startswith("SessionMeter")]
    assert [(v["timestamp"], v["value"]) for v in values] == [
        ((T0 + timedelta(minutes=2)).isoformat().replace("+00:00", "Z"), 1700.0)
    ]
    assert events[1][1]["session"]["energy"] == 700.0


async def test_a_transaction_closed_while_its_meter_values_are_written_stays_closed(
    bench: Bench,
) -> None:
    """The operator's stop (``transaction_closed``) lands while a MeterValues handler of that
    transaction waits for the writer: the handler's refresh afterwards does not make the
    connection take the transaction for open again (its next MeterValues would describe a
    running transaction); another charger's connection is not touched."""
    ctx, other = ChargerContext("CP-1"), ChargerContext("CP-2")
    tx = TransactionFacts(transaction_id=7, connector_id=1, started_at=T0, meter_start=0)
    services = bench.services
    services.remember_transaction(ctx, 7, tx)
    services.remember_transaction(other, 7, tx)
    services.transaction_closed("CP-1", 7)
    services.refresh_transaction(ctx, tx)
    assert await services.open_transaction(ctx, 7) is None
    assert await services.open_transaction(other, 7) is tx


async def test_a_stop_notification_closes_the_transaction_of_that_charger_only(
    bench: Bench,
) -> None:
    """The operator's stop made through another process's API arrives as a notification
    (``<transaction id> <charger id>``): the named charger's connection takes the transaction
    for closed, another's is not touched, and a payload that names none changes nothing."""
    ctx, other = ChargerContext("CP-1"), ChargerContext("CP-2")
    tx = TransactionFacts(transaction_id=7, connector_id=1, started_at=T0, meter_start=0)
    services = bench.services
    services.remember_transaction(ctx, 7, tx)
    services.remember_transaction(other, 7, tx)
    for malformed in ("", "7", "seven CP-1", "7 "):
        services.transaction_stop_notified(malformed)
    assert await services.open_transaction(ctx, 7) is tx
    services.transaction_stop_notified("7 CP-1")
    assert await services.open_transaction(ctx, 7) is None
    assert await services.open_transaction(other, 7) is tx


async def test_after_missed_stop_notifications_a_connection_reads_its_transactions_again(
    bench: Bench,
) -> None:
    """The LISTEN connection was lost, so a stop made elsewhere may have gone unheard: each
    connection forgets which transactions it took for open and asks the database again (here
    transaction 7 is open nowhere: it is taken for closed)."""
    ctx = ChargerContext("CP-1")
    tx = TransactionFacts(transaction_id=7, connector_id=1, started_at=T0, meter_start=0)
    services = bench.services
    services.remember_transaction(ctx, 7, tx)
    assert await services.open_transaction(ctx, 7) is tx
    services.transaction_stops_missed()
    assert await services.open_transaction(ctx, 7) is None


def engine(db: Database) -> SmartCharging:
    """Load management over a real (unstarted) gateway as its link and a real store."""

    async def no_credentials(_charger_id: str | None) -> list[Any]:
        return []

    gateway = Gateway(load_settings(environ={}), {}, no_credentials)
    return SmartCharging(gateway, CircuitStore(db), lambda _charger_id: None)


async def test_after_missed_stop_notifications_load_management_lets_closed_ones_go(
    bench: Bench,
) -> None:
    """Load management of this process counts transaction 7 of CP-1 (started here), which the
    operator then closed through another process while this one's LISTEN was down: once the
    loss is known (transaction_stops_missed), the closed transaction must not stay counted on
    its circuit forever."""

    load = engine(bench.db)
    services = bench.services
    services.load = load
    load.transaction_started("CP-1", 1, 7)  # transaction 7 is open nowhere in the database
    services.transaction_stops_missed()
    # A fix may read the open transactions again on a task of its own: waited for a while.
    await until(lambda: 7 not in load.control.transactions, within=5)


async def test_after_missed_stop_notifications_load_management_keeps_what_is_open(
    bench: Bench,
) -> None:
    """The check after missed stop notifications lets only the closed ones go: a transaction
    still open stays counted, and so does one that starts while the check reads the database
    (its read held here by a lock on the table), which the read cannot have seen."""
    load = engine(bench.db)
    services = bench.services
    services.load = load
    still_open = (await bench.call("StartTransaction", start(meter=0))).transaction_id
    load.transaction_started("CP-1", 1, still_open)  # (the handler's only for an Accepted tag)
    load.transaction_started("CP-1", 2, 7)  # closed elsewhere, unheard
    async with bench.db.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
        services.transaction_stops_missed()
        await until(
            lambda: bench.db.fetchval(
                "SELECT count(*) FROM pg_locks"
                " WHERE relation = 'transactions'::regclass AND NOT granted"
            )
        )
        load.transaction_started("CP-1", 3, 2_000_000)  # started after the read began
    await until(lambda: 7 not in load.control.transactions)
    assert still_open in load.control.transactions
    assert 2_000_000 in load.control.transactions


async def test_load_managements_check_retries_through_a_database_outage(
    private_pg: tuple[EmbeddedPostgres, str], caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL is away when stop notifications are found missed: the check tries again
    until it answers, and then lets the closed transaction go; the outage is one WARNING and
    one INFO, with no traceback."""
    pg, dsn = private_pg
    db = Database(dsn, pool_size=2)
    await db.open(migrate=False)
    load = engine(db)
    try:
        load.transaction_started("CP-1", 1, 7)
        caplog.set_level(logging.DEBUG, logger="evgate")
        await asyncio.to_thread(pg.stop, "fast")
        load.transaction_stops_missed()
        await until(lambda: db.health.failures >= 2, within=30)
        assert 7 in load.control.transactions
        await asyncio.to_thread(pg.restart_same_port)
        await until(lambda: 7 not in load.control.transactions, within=30)
    finally:
        await load.stop()
        await db.close()
    evgate = [r for r in caplog.records if r.name.startswith("evgate")]
    assert [r.getMessage() for r in evgate if r.exc_info] == []
    loud = [r.getMessage() for r in evgate if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "PostgreSQL unavailable" in loud[0], loud
    assert len([r for r in evgate if "PostgreSQL available again" in r.getMessage()]) == 1
