"""handlers room: StartTransaction and StopTransaction.

StartTransaction always gets a transaction id, unique across the system (a PostgreSQL
sequence), even for a refused id-tag (the refusal is in idTagInfo, and that transaction's
StopTransaction is accepted). A resent StartTransaction (same charger, connector, timestamp,
id-tag and meterStart) gets the id and idTagInfo status of its first attempt. A reservationId
that evgate issued for this charger ends that reservation.

StartTransaction snapshots the tariff that applies (``HandlerServices.tariff_for``, an
in-memory lookup: no query) on the transaction, for the id-tag's group and owner (the
decision's); a resend keeps its first attempt's. The
StopTransaction that closes a transaction with a snapshot prices it (``pricing/``) from its
meter readings and idle periods, in the stop's database transaction: the price is stored with
the transaction and its CDR and carried by its events. One with none has no price (not 0).

StopTransaction closes the transaction with its meterStop, time, id-tag and reason (exactly as
sent; none when absent), and stores its transactionData as meter values of the transaction. A
stop for an unknown or already closed transaction changes no transaction and is answered like
any other: the charger only needs to know it was received. A stop's idTag is judged with
purpose ``stop`` and the transaction's own id-tag (an external provider is not asked to start
a session; see ``auth/webhook.py``).

Events, in the transaction of the change and only for a change (a resend emits nothing): the
StartTransaction that makes a transaction emits SessionStartStopNotification and
session.start.stop.notification (``start``), SessionUpdateNotification and transaction.changed
(``created``), and reservation.changed ``done`` for the reservation it used; the
StopTransaction that closes one emits the ``stop`` pair, SessionUpdateNotification
(``finished``), transaction.changed (``updated``) and cdr.received, with its CDR row.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec
from msgspec import UNSET

from evgate.events.builders import (
    reservation_changed,
    transaction_started,
)
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.meter_values import meter_rows, running_price, transaction_id_or_none
from evgate.handlers.services import (
    INT32_MAX,
    METER_MAX,
    HandlerServices,
    check_range,
    id_tag_info,
)
from evgate.pricing import Driver, Reading
from evgate.protocol.v16 import (
    StartTransactionRequest,
    StartTransactionResponse,
    StopTransactionRequest,
    StopTransactionResponse,
)
from evgate.storage.ops import meter_values as meter_ops
from evgate.storage.ops import outbox, transactions
from evgate.storage.ops.base import Results, Write
from evgate.storage.ops.meter_values import MeterRow
from evgate.storage.ops.stops import after_stop
from evgate.storage.ops.transactions import (
    TransactionFacts,
    TransactionStart,
    TransactionStop,
)

__all__ = ["routes"]


def energy_readings(rows: Iterable[MeterRow]) -> list[Reading]:
    """The energy register readings (the total at the outlet, as the stop op reads them) of
    ``rows``: a StopTransaction's transactionData (which the stop op reads too, when its rows
    are new: ``ops.stops.priced`` counts a time once)."""
    return [
        Reading(row[3], Decimal(repr(row[10])))
        for row in rows
        if row[4] == "Energy.Active.Import.Register"
        and row[5] is None
        and row[6] == "Outlet"
        and row[10] is not None
    ]


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    async def start_transaction(
        ctx: ChargerContext, request: StartTransactionRequest
    ) -> StartTransactionResponse:
        connector_id = check_range(request.connector_id, 0, INT32_MAX, "connectorId")
        meter_start = check_range(request.meter_start, -METER_MAX, METER_MAX, "meterStart")
        start = TransactionStart(
            charger_id=ctx.charger_id,
            connector_id=connector_id,
            id_tag=request.id_tag,
            meter_start=meter_start,
            started_at=request.timestamp,
            id_tag_status="",
            reservation_id=transaction_id_or_none(request.reservation_id),
        )
        decision = await services.decide(
            ctx.charger_id,
            request.id_tag,
            connector_id=connector_id,
            timestamp=request.timestamp,
            purpose="start",
            besides=start,
        )
        # The id-tag's owner too: a group's restrictions on who charges count only for its
        # owner's own id-tags (a parentIdTag is free text).
        driver = Driver(parent_id_tag=decision.parent_id_tag, owner=decision.sub_operator_id)
        start = msgspec.structs.replace(
            start,
            id_tag_status=decision.status,
            id_tag_expiry=decision.expiry_date,
            parent_id_tag=decision.parent_id_tag,
            external_session_id=decision.external_session_id,
            tariff=services.tariff_for(ctx.charger_id, driver, request.timestamp),
        )
        charger, now = ctx.charger, services.clock()

        started = transactions.start(start)

        def described(results: Results) -> list[Write[None]]:
            made = results[started]
            if not made.created:
                return []
            # The amount so far, at the start: the connection fee (or the minimum price).
            tx = running_price(made.transaction, made.transaction.started_at)
            entries = transaction_started(charger, tx, now)
            if made.reservation_used and start.reservation_id is not None:
                entries.append(reservation_changed(charger.id, start.reservation_id, "done", now))
            return outbox.append(entries)

        # A resent StartTransaction gets what its first attempt stored, not today's decision.
        stored = (await services.emit(ctx.charger_id, [started], described))[started]
        tx = stored.transaction
        services.remember_transaction(ctx, tx.transaction_id, tx)
        if services.load is not None and stored.id_tag_status == "Accepted":
            services.load.transaction_started(ctx.charger_id, connector_id, tx.transaction_id)
        info = id_tag_info(stored.id_tag_status, stored.id_tag_expiry, stored.parent_id_tag)
        return StartTransactionResponse(id_tag_info=info, transaction_id=tx.transaction_id)

    async def stop_transaction(
        ctx: ChargerContext, request: StopTransactionRequest
    ) -> StopTransactionResponse:
        meter_stop = check_range(request.meter_stop, -METER_MAX, METER_MAX, "meterStop")
        transaction_id = transaction_id_or_none(request.transaction_id)
        id_tag = None if request.id_tag is UNSET else request.id_tag
        writes: list[Write[Any]] = []
        sent: list[Reading] = []
        stop: Write[TransactionFacts | None] | None = None
        if transaction_id is not None:
            stop = transactions.stop(
                TransactionStop(
                    transaction_id=transaction_id,
                    charger_id=ctx.charger_id,
                    meter_stop=meter_stop,
                    stopped_at=request.timestamp,
                    stop_reason=None if request.reason is UNSET else request.reason.value,
                    stop_id_tag=id_tag,
                )
            )
            writes.append(stop)
        if request.transaction_data is not UNSET:
            # In the stop's transaction (written before the stop op reads its readings:
            # ``reads_batch``). The events are the stop's: these values come with it, not as
            # MeterValues of a running session.
            rows = meter_rows(ctx.charger_id, None, transaction_id, request.transaction_data)
            writes.append(meter_ops.rows(rows))
            sent = energy_readings(rows)
        charger, now = ctx.charger, services.clock()

        def described(results: Results) -> list[Write[Any]]:
            closed = None if stop is None else results[stop]
            if closed is None:
                return []
            return after_stop(charger, closed, now, sent)

        results = await services.emit(ctx.charger_id, writes, described)
        closed = None if stop is None else results[stop]
        response = StopTransactionResponse()
        if id_tag is not None:
            # Who started it: the stop's own result, else (a resend, or a transaction this
            # connection did not close) the database.
            own = closed.id_tag if closed is not None else None
            if own is None and transaction_id is not None:
                own = await services.transactions.id_tag_of(ctx.charger_id, transaction_id)
            decision = await services.decide(
                ctx.charger_id,
                id_tag,
                check_concurrent=False,
                purpose="stop",
                transaction_id_tag=own,
            )
            response.id_tag_info = id_tag_info(
                decision.status, decision.expiry_date, decision.parent_id_tag
            )
        if transaction_id is not None:
            services.remember_transaction(ctx, transaction_id, None)
            if services.load is not None:
                services.load.transaction_stopped(ctx.charger_id, transaction_id)
        return response

    return {"StartTransaction": start_transaction, "StopTransaction": stop_transaction}
