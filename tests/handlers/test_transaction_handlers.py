"""Authorize, StartTransaction, StopTransaction and MeterValues: the decisions chargers rely
on, dedupe of resent messages, and what is stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from evgate.protocol.errors import PropertyConstraintViolationError
from evgate.protocol.v16 import (
    AuthorizeRequest,
    MeterValue,
    MeterValuesRequest,
    Reason,
    SampledValue,
    StartTransactionRequest,
    StopTransactionRequest,
)
from evgate.storage.reservations import ReservationStore

from .handler_bench import Bench

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def start(id_tag: str = "TAG1", connector: int = 1, meter: int = 1000, **extra: object) -> object:
    return StartTransactionRequest(
        connector_id=connector, id_tag=id_tag, meter_start=meter, timestamp=T0, **extra
    )  # type: ignore[arg-type]


def stop(transaction_id: int, **extra: object) -> StopTransactionRequest:
    extra.setdefault("meter_stop", 6000)
    return StopTransactionRequest(
        timestamp=T0 + timedelta(hours=1), transaction_id=transaction_id, **extra
    )  # type: ignore[arg-type]


async def status_of(bench: Bench, id_tag: str) -> str:
    response = await bench.call("Authorize", AuthorizeRequest(id_tag=id_tag))
    return str(response.id_tag_info.status)


async def test_authorize_answers_from_the_id_tag_list(bench: Bench) -> None:
    """Accepted, Blocked, Expired (by date), unknown Invalid; case-insensitive."""
    await bench.add_id_tag("GOOD")
    await bench.add_id_tag("BAD", status="Blocked")
    await bench.add_id_tag("OLD", expiry_date=datetime.now(UTC) - timedelta(days=1))
    assert await status_of(bench, "good") == "Accepted"
    assert await status_of(bench, "BAD") == "Blocked"
    assert await status_of(bench, "OLD") == "Expired"
    assert await status_of(bench, "NOBODY") == "Invalid"


async def test_an_unknown_id_tag_is_never_created_by_being_seen(bench: Bench) -> None:
    """Authorize and StartTransaction with an unknown id-tag leave the list empty."""
    await bench.call("Authorize", AuthorizeRequest(id_tag="STRANGER"))
    await bench.call("StartTransaction", start("STRANGER"))
    assert await bench.rows("SELECT * FROM id_tags") == []


async def test_authorize_passes_expiry_and_parent_and_a_blocked_parent_blocks(
    bench: Bench,
) -> None:
    """idTagInfo carries expiryDate and parentIdTag; a Blocked parent blocks its children."""
    expiry = datetime(2099, 1, 1, tzinfo=UTC)
    await bench.add_id_tag("FLEET")
    await bench.add_id_tag("CARD", expiry_date=expiry, parent_id_tag="FLEET")
    response = await bench.call("Authorize", AuthorizeRequest(id_tag="CARD"))
    assert msgspec.to_builtins(response) == {
        "idTagInfo": {
            "status": "Accepted",
            "expiryDate": "2099-01-01T00:00:00Z",
            "parentIdTag": "FLEET",
        }
    }
    await bench.id_tags.update("FLEET", status="Blocked")
    await bench.native.load()
    assert await status_of(bench, "CARD") == "Blocked"


async def test_start_gives_a_transaction_id_even_to_a_refused_id_tag(bench: Bench) -> None:
    """A refused id-tag gets an id with the refusal in idTagInfo; its stop is accepted."""
    response = await bench.call("StartTransaction", start("NOBODY"))
    assert response.transaction_id > 0 and response.id_tag_info.status == "Invalid"
    stopped = await bench.call("StopTransaction", stop(response.transaction_id))
    assert msgspec.json.encode(stopped) == b"{}"
    [row] = await bench.rows("SELECT id_tag_status, meter_stop FROM transactions")
    assert tuple(row) == ("Invalid", 6000)


async def test_a_resent_start_gets_the_same_transaction_id(bench: Bench) -> None:
    """Same charger, connector, timestamp, id-tag and meterStart: one row, one id."""
    await bench.add_id_tag("TAG1")
    first = await bench.call("StartTransaction", start())
    again = await bench.call("StartTransaction", start())
    other = await bench.call("StartTransaction", start(meter=1001))
    assert first.transaction_id == again.transaction_id != other.transaction_id
    assert len(await bench.rows("SELECT id FROM transactions")) == 2


async def test_resent_starts_in_one_batch_get_one_transaction(bench: Bench) -> None:
    """Dedupe holds within a batch: concurrent copies of one start share its id."""
    responses = await asyncio.gather(*(bench.call("StartTransaction", start()) for _ in range(5)))
    assert len({r.transaction_id for r in responses}) == 1
    assert len(await bench.rows("SELECT id FROM transactions")) == 1


async def test_transaction_ids_are_unique_across_chargers(bench: Bench) -> None:
    """Ids come from one sequence: two chargers' first transactions differ."""
    a = await bench.call("StartTransaction", start(), "CP-1")
    b = await bench.call("StartTransaction", start(), "CP-2")
    assert a.transaction_id != b.transaction_id


async def test_concurrent_transactions_are_allowed_by_default(bench: Bench) -> None:
    """Two open transactions for one id-tag: both Accepted."""
    await bench.add_id_tag("TAG1")
    await bench.call("StartTransaction", start(connector=1))
    second = await bench.call("StartTransaction", start(connector=2))
    assert second.id_tag_info.status == "Accepted"


async def test_concurrent_tx_when_the_operator_turns_it_off(make_bench: object) -> None:
    """allow_concurrent_tx=False: Authorize and a second start are ConcurrentTx; a resent
    first start keeps its Accepted answer; after the stop it is Accepted again."""
    bench = make_bench(allow_concurrent_tx=False)  # type: ignore[operator]
    await bench.add_id_tag("TAG1")
    first = await bench.call("StartTransaction", start(connector=1))
    assert first.id_tag_info.status == "Accepted"
    assert await status_of(bench, "tag1") == "ConcurrentTx"
    second = await bench.call("StartTransaction", start(connector=2))
    assert second.id_tag_info.status == "ConcurrentTx" and second.transaction_id > 0
    resent = await bench.call("StartTransaction", start(connector=1))
    assert resent.id_tag_info.status == "Accepted"
    await bench.call("StopTransaction", stop(first.transaction_id))
    await bench.call("StopTransaction", stop(second.transaction_id))
    assert await status_of(bench, "TAG1") == "Accepted"


async def test_stop_stores_reason_exactly_as_sent_and_none_when_absent(bench: Bench) -> None:
    """reason EVDisconnected is stored as such; a stop without reason stores none."""
    a = await bench.call("StartTransaction", start(connector=1))
    b = await bench.call("StartTransaction", start(connector=2))
    await bench.call("StopTransaction", stop(a.transaction_id, reason=Reason.ev_disconnected))
    await bench.call("StopTransaction", stop(b.transaction_id))
    rows = await bench.rows("SELECT stop_reason FROM transactions ORDER BY id")
    assert [r[0] for r in rows] == ["EVDisconnected", None]


async def test_stop_of_unknown_or_closed_transaction_is_accepted_and_changes_nothing(
    bench: Bench,
) -> None:
    """An unknown id, another charger's transaction and a second stop: all answered, the
    first stop's values kept."""
    tx = (await bench.call("StartTransaction", start())).transaction_id
    await bench.call("StopTransaction", stop(tx))
    later = StopTransactionRequest(meter_stop=9999, timestamp=T0, transaction_id=tx)
    assert msgspec.json.encode(await bench.call("StopTransaction", later)) == b"{}"
    await bench.call("StopTransaction", stop(tx), "CP-2")
    await bench.call("StopTransaction", stop(424242))
    await bench.call("StopTransaction", stop(-5))
    [row] = await bench.rows("SELECT meter_stop FROM transactions")
    assert row[0] == 6000


async def test_stop_with_id_tag_answers_its_id_tag_info(bench: Bench) -> None:
    """idTagInfo is in the StopTransaction answer only when the stop names an id-tag."""
    await bench.add_id_tag("TAG1")
    tx = (await bench.call("StartTransaction", start())).transaction_id
    response = await bench.call("StopTransaction", stop(tx, id_tag="tag1"))
    assert response.id_tag_info.status == "Accepted"


async def test_stop_transaction_data_is_stored_as_meter_values_of_its_connector(
    bench: Bench,
) -> None:
    """transactionData rows get the transaction's id and connector."""
    tx = (await bench.call("StartTransaction", start(connector=2))).transaction_id
    data = [MeterValue(timestamp=T0, sampled_value=[SampledValue(value="1.5", unit="kWh")])]
    await bench.call("StopTransaction", stop(tx, transaction_data=data))
    rows = await bench.rows("SELECT connector_id, transaction_id, value, unit FROM meter_values")
    assert [tuple(r) for r in rows] == [(2, tx, 1500.0, "Wh")]


async def test_start_with_reservation_ends_that_reservation(bench: Bench) -> None:
    """A reservationId issued for this charger is Used by the start, with its transaction."""
    reservations = ReservationStore(bench.db)
    r = await reservations.allocate("CP-1", 1, "TAG1", T0 + timedelta(hours=1))
    await reservations.reserve(r.id, "CP-1", 1, "TAG1", r.expiry_date)  # the charger accepted
    tx = (await bench.call("StartTransaction", start(reservation_id=r.id))).transaction_id
    ended = await reservations.get(r.id)
    assert (ended.status, ended.transaction_id) == ("used", tx)


async def test_out_of_range_meter_start_is_refused_clearly(bench: Bench) -> None:
    """A connector id or meterStart outside what can be stored: PropertyConstraintViolation."""
    with pytest.raises(PropertyConstraintViolationError):
        await bench.call("StartTransaction", start(connector=2**31))
    with pytest.raises(PropertyConstraintViolationError):
        await bench.call("StartTransaction", start(meter=2**63))
    with pytest.raises(PropertyConstraintViolationError, match=r"^meterStart: "):
        await bench.call("StartTransaction", start(meter=2**62))
    with pytest.raises(PropertyConstraintViolationError, match=r"^meterStop: "):
        await bench.call("StopTransaction", stop(1, meter_stop=-(2**62)))


async def test_extreme_meter_readings_are_stored_and_their_energy_too(bench: Bench) -> None:
    """meterStart -(2^62-1) and meterStop 2^62-1 are stored as sent, and the CDR's energy
    (their difference) fits its bigint: it overflowed, answering InternalError to every
    resent StopTransaction (issue 15 item 3)."""
    await bench.add_id_tag("TAG1")
    low, high = -(2**62 - 1), 2**62 - 1
    tx = (await bench.call("StartTransaction", start(meter=low))).transaction_id
    await bench.call("StopTransaction", stop(tx, meter_stop=high))
    [row] = await bench.rows("SELECT meter_start, meter_stop FROM transactions")
    assert tuple(row) == (low, high)
    [cdr] = await bench.rows("SELECT energy_wh FROM cdrs")
    assert cdr[0] == high - low


def sample(value: str, **extra: object) -> SampledValue:
    return SampledValue(value=value, **extra)  # type: ignore[arg-type]


async def test_meter_values_without_transaction_are_stored(bench: Bench) -> None:
    """MeterValues outside a transaction: answered, rows with no transaction."""
    request = MeterValuesRequest(
        connector_id=1, meter_value=[MeterValue(timestamp=T0, sampled_value=[sample("12")])]
    )
    assert msgspec.json.encode(await bench.call("MeterValues", request)) == b"{}"
    rows = await bench.rows(
        "SELECT transaction_id, measurand, location, context, format, unit, value FROM meter_values"
    )
    assert [tuple(r) for r in rows] == [
        (None, "Energy.Active.Import.Register", "Outlet", "Sample.Periodic", "Raw", "Wh", 12.0)
    ]


async def test_meter_values_normalise_units_and_keep_signed_and_odd_values_raw(
    bench: Bench,
) -> None:
    """kW→W, kvarh→varh, Celcius→Celsius; SignedData and non-numbers keep their text, and so
    does a number that is no finite float once scaled (1e306 kWh, stored with its own unit)."""
    values = [
        sample("1e306", measurand="Energy.Active.Import.Register", unit="kWh"),
        sample("7.4", measurand="Power.Active.Import", unit="kW", phase="L1"),
        sample("2", measurand="Energy.Reactive.Import.Register", unit="kvarh"),
        sample("21.5", measurand="Temperature", unit="Celcius"),
        sample("AbC=", measurand="Voltage", format="SignedData"),
        sample("nan", measurand="Current.Import", unit="A"),
    ]
    request = MeterValuesRequest(
        connector_id=1,
        transaction_id=7,
        meter_value=[MeterValue(timestamp=T0, sampled_value=values)],
    )
    await bench.call("MeterValues", request)
    rows = await bench.rows(
        "SELECT measurand, phase, unit, value, raw_value, format, transaction_id"
        " FROM meter_values ORDER BY measurand"
    )
    assert [tuple(r) for r in rows] == [
        ("Current.Import", None, "A", None, "nan", "Raw", 7),
        ("Energy.Active.Import.Register", None, "kWh", None, "1e306", "Raw", 7),
        ("Energy.Reactive.Import.Register", None, "varh", 2000.0, None, "Raw", 7),
        ("Power.Active.Import", "L1", "W", 7400.0, None, "Raw", 7),
        ("Temperature", None, "Celsius", 21.5, None, "Raw", 7),
        ("Voltage", None, None, None, "AbC=", "SignedData", 7),
    ]


async def test_resent_meter_values_are_stored_and_rolled_up_once(bench: Bench) -> None:
    """The same MeterValues twice (separately and within one batch): one row, count 1."""
    request = MeterValuesRequest(
        connector_id=1, meter_value=[MeterValue(timestamp=T0, sampled_value=[sample("5")])]
    )
    await bench.call("MeterValues", request)
    await asyncio.gather(*(bench.call("MeterValues", request) for _ in range(3)))
    assert len(await bench.rows("SELECT 1 FROM meter_values")) == 1
    [rollup] = await bench.rows("SELECT count, sum_value FROM meter_rollup_1m")
    assert tuple(rollup) == (1, 5.0)


async def test_meter_values_with_a_huge_connector_id_are_refused(bench: Bench) -> None:
    """connectorId beyond 32 bits: PropertyConstraintViolation."""
    request = MeterValuesRequest(
        connector_id=2**40, meter_value=[MeterValue(timestamp=T0, sampled_value=[sample("1")])]
    )
    with pytest.raises(PropertyConstraintViolationError):
        await bench.call("MeterValues", request)
