"""handlers room: MeterValues, and the conversion of sampled values into stored rows (also
used for StopTransaction's transactionData).

One row per sampled value. What is stored, from OCPP 1.6's definitions:

* the measurand, location, context and format as sent, or their OCPP defaults when absent
  (``Energy.Active.Import.Register``, ``Outlet``, ``Sample.Periodic``, ``Raw``); the phase as
  sent (none when absent);
* the value as a number with its unit normalised: ``kWh``→``Wh``, ``kW``→``W``,
  ``kvarh``→``varh``, ``kvar``→``var``, ``kVA``→``VA`` (times 1000), and 1.6's
  misspelt ``Celcius``→``Celsius``; an absent unit is OCPP's default ``Wh`` for the
  ``Energy.Active.*`` measurands and none for the others (where ``Wh`` cannot be meant);
* signed values (format ``SignedData``) and values that are not a finite number: no number,
  the text kept as sent (``rawValue``).

MeterValues is answered after the rows commit, with or without a transaction (a transaction
id evgate does not know is stored as sent: the charger may know better). One inside an open
transaction of the charger emits SessionMeterValuesNotification (the values the catalog names)
and SessionUpdateNotification (energy, power and state of charge so far), in the same
transaction as the rows, built from the values that transaction stored (the meter op says
which rows were new): a resent MeterValues whose values are all stored emits nothing, and one
that adds values to what was stored emits SessionMeterValuesNotification with the new values
only (and the update). Nothing a receiver was told is told again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec
from msgspec import UNSET

from evgate.events.builders import transaction_meter_values, with_readings
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.services import INT32_MAX, HandlerServices, check_range
from evgate.pricing import PricingInput, price
from evgate.protocol.v16 import MeterValue, MeterValuesRequest, MeterValuesResponse
from evgate.storage.ops import meter_values as meter_ops
from evgate.storage.ops import outbox
from evgate.storage.ops.base import Results, Write
from evgate.storage.ops.meter_values import MeterRow, NewRows
from evgate.storage.ops.transactions import TransactionFacts

__all__ = ["meter_rows", "normalise", "routes", "running_price", "stored_values"]

_SCALED = {
    "kWh": ("Wh", 1000.0),
    "kW": ("W", 1000.0),
    "kvarh": ("varh", 1000.0),
    "kvar": ("var", 1000.0),
    "kVA": ("VA", 1000.0),
    "Celcius": ("Celsius", 1.0),
}


def normalise(
    value: str, unit: str | None, measurand: str, signed: bool
) -> tuple[str | None, float | None, str | None]:
    """The stored (unit, value, raw_value) of one sampled value. A value kept as text keeps a
    unit of the text's own scale ("1e306" kWh stays kWh; "Celcius" is only renamed)."""
    if unit is None and measurand.startswith("Energy.Active."):
        unit = "Wh"
    scaled = _SCALED.get(unit) if unit is not None else None
    raw_unit = scaled[0] if scaled is not None and scaled[1] == 1.0 else unit
    if signed:
        return raw_unit, None, value
    try:
        number = float(value)
    except ValueError:
        return raw_unit, None, value
    if scaled is not None:
        unit = scaled[0]
        number *= scaled[1]
    # After scaling: "1e306" kWh is a finite number but no finite float8 of Wh.
    if not math.isfinite(number):
        return raw_unit, None, value
    return unit, number, None


def meter_rows(
    charger_id: str,
    connector_id: int | None,
    transaction_id: int | None,
    meter_values: Iterable[MeterValue],
) -> list[MeterRow]:
    """The rows of ``meter_values``. ``connector_id`` None: the transaction's connector (the
    writer op looks it up)."""
    rows: list[MeterRow] = []
    append = rows.append
    for meter_value in meter_values:
        ts: datetime = meter_value.timestamp
        for sv in meter_value.sampled_value:
            fmt = "Raw" if sv.format is UNSET else str(sv.format)
            measurand = (
                "Energy.Active.Import.Register" if sv.measurand is UNSET else str(sv.measurand)
            )
            unit, number, raw = normalise(
                sv.value,
                None if sv.unit is UNSET else str(sv.unit),
                measurand,
                fmt == "SignedData",
            )
            append(
                (
                    charger_id,
                    connector_id,
                    transaction_id,
                    ts,
                    measurand,
                    None if sv.phase is UNSET else str(sv.phase),
                    "Outlet" if sv.location is UNSET else str(sv.location),
                    "Sample.Periodic" if sv.context is UNSET else str(sv.context),
                    fmt,
                    unit,
                    number,
                    raw,
                )
            )
    return rows


def stored_values(meter_values: Sequence[MeterValue], new: NewRows) -> list[MeterValue]:
    """The part of ``meter_values`` that the rows at positions ``new`` hold (rows made by
    :func:`meter_rows`, one per sampled value, in order): each MeterValue with only those of
    its sampled values, and none left without any."""
    if len(new) == sum(len(mv.sampled_value) for mv in meter_values):
        return list(meter_values)
    wanted = set(new)
    kept: list[MeterValue] = []
    position = 0
    for mv in meter_values:
        values = [sv for j, sv in enumerate(mv.sampled_value) if position + j in wanted]
        position += len(mv.sampled_value)
        if values:
            kept.append(msgspec.structs.replace(mv, sampled_value=values))
    return kept


def running_price(tx: TransactionFacts, at: datetime) -> TransactionFacts:
    """``tx`` with the amount so far, when a tariff applies: as if it stopped at ``at`` with
    the latest energy reading (no idle fee: the idle periods are the database's, priced at the
    stop)."""
    if tx.tariff is None:
        return tx
    facts = PricingInput(
        started_at=tx.started_at,
        stopped_at=at,
        meter_start=tx.meter_start,
        meter_stop=tx.meter_start if tx.meter_wh is None else int(tx.meter_wh),
    )
    return msgspec.structs.replace(tx, price=price(tx.tariff, facts))


def transaction_id_or_none(transaction_id: int | object) -> int | None:
    """A charger's transaction id as stored: None when absent or outside what evgate issues
    (1..2^31-1), which can only be a transaction evgate does not know."""
    if isinstance(transaction_id, int) and 0 < transaction_id <= INT32_MAX:
        return transaction_id
    return None


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    async def meter_values(ctx: ChargerContext, request: MeterValuesRequest) -> MeterValuesResponse:
        connector_id = check_range(request.connector_id, 0, INT32_MAX, "connectorId")
        transaction_id = transaction_id_or_none(request.transaction_id)
        rows = meter_rows(ctx.charger_id, connector_id, transaction_id, request.meter_value)
        if services.load is not None:
            services.load.meter_values(ctx.charger_id, connector_id, request.meter_value)
        tx = None
        if transaction_id is not None:
            tx = await services.open_transaction(ctx, transaction_id)
        stored = meter_ops.rows(rows)
        if tx is None:
            await services.emit(ctx.charger_id, [stored], ())
            return MeterValuesResponse()
        tx = with_readings(tx, request.meter_value)
        if request.meter_value:
            tx = running_price(tx, max(mv.timestamp for mv in request.meter_value))
        charger, now, sent = ctx.charger, services.clock(), request.meter_value

        def described(results: Results) -> list[Write[None]]:
            new = stored_values(sent, results[stored])
            return outbox.append(transaction_meter_values(charger, tx, new, now)) if new else []

        await services.emit(ctx.charger_id, [stored], described)
        services.refresh_transaction(ctx, tx)
        return MeterValuesResponse()

    return {"MeterValues": meter_values}
