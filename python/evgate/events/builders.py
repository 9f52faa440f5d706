"""events room: pure functions that turn domain facts into outbox entries.

A handler (or a store) that changes state calls a builder and hands the returned
:class:`OutboxEntry` rows to the same database transaction as the change — the group-commit
writer's submission, or the store's own transaction (see ``storage/outbox.py``
``insert_outbox``). Builders do no I/O and read no clock: ``at`` is passed in, so a handler
stamps every event of one message with one time.

Every builder returns entries whose ``payload`` is the exact JSON body receivers get.

How each event is produced (the callers named in ``events/catalog.py``):

========================================  ====================================================
BootNotification.req                      :func:`boot_notification`
connect / disconnect (gateway observer)   :func:`network_status`
StatusNotification.req                    :func:`hardware_status`; the first one of a
                                          connector also :func:`evse_changed` ("created")
StartTransaction.req                      :func:`transaction_started`
MeterValues.req with a transactionId      :func:`transaction_meter_values`
StopTransaction.req                       :func:`transaction_stopped` (includes the CDR row)
DataTransfer.req                          :func:`data_transfer`
DiagnosticsStatusNotification.req         :func:`diagnostics_status`
SecurityEventNotification.req             :func:`security_event`
GetConfiguration.conf / its failure       :func:`configuration_synced`
Authorize.req                             :func:`authorization`
id tag created / updated / deleted        :func:`id_tag_changed`
charger created / updated / deleted       :func:`charger_changed` (``storage/chargers.py``)
ReserveNow / CancelReservation / expiry   :func:`reservation_changed`
location created / updated / deleted      :func:`location_changed` (``storage/locations.py``)
tariff created / updated / deleted        :func:`tariff_changed` (``storage/tariffs.py``)
user created / updated / deleted          :func:`user_changed` (``storage/users.py``)
a booked balance entry                    :func:`user_balance_changed` (``storage/balances.py``)
a payment method's change                 :func:`payment_method_changed` (``storage/payments.py``)
a user's invoice details' change          :func:`invoice_details_changed` (``storage/payments.py``)
a subscription plan's change              :func:`subscription_plan_changed` (``storage/plans.py``)
a user's subscription's change or expiry  :func:`user_subscription_changed` (``storage/plans.py``)
a partner's change                        :func:`partner_changed` (``storage/partners.py``)
a partner invite's change                 :func:`partner_invite_changed` (``storage/partners.py``)
a partner's settlement report made        :func:`settlement_report_created`
                                          (``storage/settlements.py``)
a sub-operator created / deleted          :func:`sub_operator_changed` (``storage/sub_operators``)
circuit created / updated / deleted       :func:`circuit_changed` (``storage/circuits.py``)
a circuit's consumption, periodically     :func:`circuit_consumption`
SetChargingProfile answered / unanswered  :func:`charging_profile_applied`
========================================  ====================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import msgspec
from msgspec import UNSET

from evgate.events import catalog as c
from evgate.pricing import Price, Tariff
from evgate.protocol.v16.messages import (
    BootNotificationRequest,
    DataTransferRequest,
    DiagnosticsStatusNotificationRequest,
    KeyValue,
    MeterValue,
    SecurityEventNotificationRequest,
    StatusNotificationRequest,
)
from evgate.storage.balances import BalanceEntry
from evgate.storage.cdrs import Cdr
from evgate.storage.ops.transactions import TransactionFacts
from evgate.storage.users import User

if TYPE_CHECKING:
    from evgate.storage.locations import Location
    from evgate.storage.settlements import SettlementReport

__all__ = [
    "AppliedProfile",
    "ChargerFacts",
    "ChargerRef",
    "OutboxEntry",
    "PhaseCurrent",
    "authorization",
    "boot_notification",
    "cdr_id",
    "charger_changed",
    "charging_profile_applied",
    "circuit_changed",
    "circuit_consumption",
    "command_completed",
    "configuration_synced",
    "data_transfer",
    "diagnostics_status",
    "evse_changed",
    "hardware_status",
    "id_tag_changed",
    "invoice_details_changed",
    "location_changed",
    "network_status",
    "partner_changed",
    "partner_invite_changed",
    "payment_method_changed",
    "reservation_changed",
    "security_event",
    "settlement_report_created",
    "sub_operator_changed",
    "subscription_plan_changed",
    "tariff_changed",
    "transaction_meter_values",
    "transaction_started",
    "transaction_stopped",
    "user_balance_changed",
    "user_changed",
    "user_subscription_changed",
    "with_readings",
]

_encoder = msgspec.json.Encoder(decimal_format="number")  # amounts are JSON numbers
T = TypeVar("T")


class ChargerRef(NamedTuple):
    """Which charger an event is about: its OCPP identity and its ``number`` (the
    ``chargers.number`` surrogate that payloads carry as ``chargePointId``)."""

    id: str
    number: int


class OutboxEntry(NamedTuple):
    """One outbox row: the event name, the charger it is about ('' for none: the delivery
    order key) and the JSON payload."""

    event: str
    charger_id: str
    payload: bytes


class ChargerFacts(msgspec.Struct, kw_only=True):
    """A charger's registry row, as the charger-changed events report it."""

    id: str
    number: int
    description: str
    security_profile: int
    registration_status: str
    network_status: c.NetworkStatus
    created_at: datetime
    updated_at: datetime


def _entry(charger_id: str, event: c.Event) -> OutboxEntry:
    return OutboxEntry(type(event).__struct_config__.tag, charger_id, _encoder.encode(event))  # type: ignore[arg-type]


def _about(charger: ChargerRef, event: type[c.ChargerEvent], **fields: Any) -> OutboxEntry:
    """An entry of an event about one charger (chargePointId and networkId filled in)."""
    return _entry(charger.id, event(chargePointId=charger.number, networkId=charger.id, **fields))


def _unset_if_none(value: T | None) -> T | msgspec.UnsetType:
    return UNSET if value is None else value


def _or_none(value: T | msgspec.UnsetType) -> T | None:
    return None if isinstance(value, msgspec.UnsetType) else value


# Charger messages.


def boot_notification(
    charger: ChargerRef, request: BootNotificationRequest, at: datetime
) -> OutboxEntry:
    """BootNotification: the charger's boot report, received at ``at``."""

    info = c.BootInfo(
        model=request.charge_point_model,
        vendor=request.charge_point_vendor,
        charge_box_serial_number=_or_none(request.charge_box_serial_number),
        charge_point_serial_number=_or_none(request.charge_point_serial_number),
        firmware_version=_or_none(request.firmware_version),
        iccid=_or_none(request.iccid),
        imsi=_or_none(request.imsi),
        meter_serial_number=_or_none(request.meter_serial_number),
        meter_type=_or_none(request.meter_type),
    )
    return _about(charger, c.BootNotification, timestamp=at, bootNotification=info)


def network_status(charger: ChargerRef, connected: bool, at: datetime) -> OutboxEntry:
    """NetworkStatusNotification: ``available`` on connect, ``temporarily unavailable`` on
    disconnect. The caller also sets ``chargers.network_status`` in the same transaction."""
    return _about(
        charger,
        c.NetworkStatusNotification,
        timestamp=at,
        networkStatus="available" if connected else "temporarily unavailable",
    )


_HARDWARE_STATUS: dict[str, c.HardwareStatus] = {
    "Available": "available",
    "Preparing": "preparing",
    "Charging": "charging",
    "SuspendedEV": "suspendedEV",
    "SuspendedEVSE": "suspendedEVSE",
    "Finishing": "finishing",
    "Reserved": "reserved",
    "Unavailable": "unavailable",
    "Faulted": "faulted",
}


def hardware_status(
    charger: ChargerRef, request: StatusNotificationRequest, at: datetime
) -> OutboxEntry:
    """HardwareStatusNotification from a StatusNotification.req; connector 0 (the whole
    charger) has no ``evseId``. ``timestamp`` is the charger's own, else ``at``."""
    return _about(
        charger,
        c.HardwareStatusNotification,
        evseId=request.connector_id if request.connector_id > 0 else UNSET,
        timestamp=_or_none(request.timestamp) or at,
        hardwareStatus=_HARDWARE_STATUS[request.status],
        errorCode=None if request.error_code == "NoError" else str(request.error_code),
        info=_or_none(request.info),
        vendorId=_or_none(request.vendor_id),
        vendorErrorCode=_or_none(request.vendor_error_code),
    )


def evse_changed(
    charger: ChargerRef, connector_id: int, action: c.Action, at: datetime
) -> OutboxEntry:
    """evse.changed: a connector (OCPP 1.6: one per EVSE) appeared, changed or went away."""
    return _about(
        charger,
        c.EvseChanged,
        evseId=connector_id,
        action=action,
        lastUpdatedAt=at,
    )


def data_transfer(charger: ChargerRef, request: DataTransferRequest) -> OutboxEntry:
    """chargePoint.dataTransferReceived: a DataTransfer.req from the charger, as it came."""
    return _about(
        charger,
        c.DataTransferReceived,
        vendorId=request.vendor_id,
        messageId=request.message_id,
        data=request.data,
    )


_DIAGNOSTICS = {
    "Idle": "idle",
    "Uploaded": "uploaded",
    "UploadFailed": "uploadfailed",
    "Uploading": "uploading",
}


def diagnostics_status(
    charger: ChargerRef,
    request: DiagnosticsStatusNotificationRequest,
    request_id: int,
    at: datetime,
) -> OutboxEntry:
    """DiagnosticsStatusNotification. OCPP 1.6 carries no request id: ``request_id`` is the id
    of the charger's latest GetDiagnostics command, 0 if evgate sent none."""
    return _about(
        charger,
        c.DiagnosticsStatusNotification,
        requestId=request_id,
        status=_DIAGNOSTICS[request.status],
        lastUpdatedAt=at,
    )


# The OCPP 1.6 security whitepaper's list of critical security events.
_CRITICAL_SECURITY_EVENTS = frozenset(
    {
        "FirmwareUpdated",
        "SettingSystemTime",
        "StartupOfTheDevice",
        "ResetOrReboot",
        "SecurityLogWasCleared",
        "ReconfigurationOfSecurityParameters",
        "MemoryExhaustion",
        "TamperDetectionActivated",
        "InvalidFirmwareSignature",
        "InvalidFirmwareSigningCertificate",
        "InvalidCentralSystemCertificate",
        "InvalidChargePointCertificate",
        "InvalidTLSVersion",
        "InvalidTLSCipherSuite",
    }
)


def security_event(charger: ChargerRef, request: SecurityEventNotificationRequest) -> OutboxEntry:
    """SecurityEventNotification; ``critical`` per the OCPP 1.6 security whitepaper."""
    return _about(
        charger,
        c.SecurityEventNotification,
        type=request.type,
        timestamp=request.timestamp,
        techInfo=request.tech_info,
        critical=request.type in _CRITICAL_SECURITY_EVENTS,
    )


def configuration_synced(
    charger: ChargerRef,
    keys: Iterable[KeyValue] | None,
    at: datetime,
    request_id: int | None = None,
    error: str | None = None,
) -> OutboxEntry:
    """ChargePointSyncConfigurationNotification after a GetConfiguration: its keys, or the
    ``error`` that made it fail. ``request_id`` is the command's id; none for an automatic
    sync."""
    configuration = (
        UNSET
        if keys is None
        else [
            c.ConfigurationEntry(key=k.key, value=k.value, readonly=k.readonly, lastUpdatedAt=at)
            for k in keys
        ]
    )
    return _about(
        charger,
        c.ChargePointSyncConfigurationNotification,
        requestId=_unset_if_none(request_id),
        configuration=configuration,
        error=_unset_if_none(error),
    )


def authorization(
    charger: ChargerRef, authorization_id: int, id_tag: str, status: str, at: datetime
) -> list[OutboxEntry]:
    """An Authorize.req judged ``status`` (the OCPP AuthorizationStatus): the legacy
    AuthorizationNotification and authorization.changed (``created``)."""
    return [
        _about(
            charger,
            c.AuthorizationNotification,
            authorizationId=authorization_id,
            idTag=id_tag,
            status=status,
            lastUpdatedAt=at,
        ),
        _about(
            charger,
            c.AuthorizationChanged,
            authorizationId=authorization_id,
            action="created",
            idTag=id_tag,
            status="accepted" if status == "Accepted" else "rejected",
            lastUpdatedAt=at,
        ),
    ]


# Transactions.

# OCPP StopTransaction reasons that are an ordinary end of a session; the catalog's other
# reasons (timeouts, limits, schedules) describe billing rules evgate does not have.
_STANDARD_STOP = frozenset({"Local", "Remote", "EVDisconnected"})

# OCPP measurand → the catalog's name and the unit it is reported in (after k→ scaling).
_MEASURANDS = {
    "Energy.Active.Import.Register": ("Energy Active Import Register", "Wh"),
    "SoC": ("State Of Charge", "Percent"),
    "Current.Import": ("Current Import", "A"),
    "Current.Offered": ("Current Offered", "A"),
    "Voltage": ("Voltage", "V"),
    "Power.Active.Import": ("Power Active Import", "W"),
    "Temperature": ("Temperature", "Celsius"),
    "Power.Offered": ("Power Offered", "W"),
}
_SCALE = {"kWh": 1000.0, "kW": 1000.0}


def _catalog_reason(tx: TransactionFacts) -> str | msgspec.UnsetType:
    """The catalog's stop reason of a stopped transaction (an absent OCPP reason is Local)."""
    if tx.stopped_at is not None and (tx.stop_reason or "Local") in _STANDARD_STOP:
        return "standard_stop"
    return UNSET


def _session_start_stop(
    charger: ChargerRef, tx: TransactionFacts, at: datetime
) -> list[OutboxEntry]:
    stopped = tx.stopped_at is not None
    fields = {
        "evseId": tx.connector_id,
        "action": "stop" if stopped else "start",
        "sessionId": tx.transaction_id,
        "idTag": _unset_if_none(tx.id_tag),
        "startedAtTimestamp": tx.started_at,
        "stoppedAtTimestamp": _unset_if_none(tx.stopped_at),
        "energyConsumed": (
            float(tx.meter_stop - tx.meter_start)
            if stopped and tx.meter_stop is not None
            else UNSET
        ),
        "reason": _catalog_reason(tx),
        "meterStart": tx.meter_start,
        # Required by the catalog even at start: the reading then is the start reading.
        "meterStop": tx.meter_stop if tx.meter_stop is not None else tx.meter_start,
        "lastUpdatedAt": at,
    }
    return [
        _about(charger, kind, **fields)
        for kind in (c.SessionStartStopNotification, c.SessionStartStopDotted)
    ]


def _lines(price: Price) -> list[c.PriceBreakdownLine]:
    return [
        c.PriceBreakdownLine(
            component=line.component,
            quantity=line.quantity,
            unit=line.unit,
            unitPrice=line.unit_price,
            amount=line.amount,
        )
        for line in price.breakdown
    ]


def _priced(price: Price | None) -> dict[str, Any]:
    """SessionInfo's price fields: the amount (without tax), totals, tax, currency, lines."""
    if price is None:
        return {}
    return {
        "amount": price.total_excl_tax,
        "totalAmount": c.TotalAmount(withTax=price.total_incl_tax, withoutTax=price.total_excl_tax),
        "tax": c.TaxInfo(taxPercentage=price.tax_percent),
        "currency": price.currency,
        "priceBreakdown": _lines(price),
        "tariffSnapshotId": price.tariff_id,
    }


def _session_update(charger: ChargerRef, tx: TransactionFacts, at: datetime) -> OutboxEntry:
    latest = tx.meter_stop if tx.meter_stop is not None else tx.meter_wh
    energy = max(0.0, float(latest) - tx.meter_start) if latest is not None else 0.0
    stopped = tx.stopped_at is not None
    session = c.SessionInfo(
        id=str(tx.transaction_id),
        chargePointId=charger.number,
        networkId=charger.id,
        evseId=tx.connector_id,
        connectorId=tx.connector_id,
        status="finished" if stopped else "active",
        reason=_catalog_reason(tx),
        startedAt=tx.started_at,
        stoppedAt=tx.stopped_at,
        energy=energy,
        socPercent=_unset_if_none(tx.soc_percent),
        idTag=_unset_if_none(tx.id_tag),
        energyConsumption=c.EnergyConsumption(total=energy, grid=energy),
        power=UNSET if tx.power_w is None else c.Power(latest=tx.power_w),
        lastUpdatedAt=at,
        **_priced(tx.price),
    )
    return _entry(charger.id, c.SessionUpdateNotification(session=session))


def _transaction_changed(
    charger: ChargerRef, tx: TransactionFacts, action: Literal["created", "updated"], at: datetime
) -> OutboxEntry:
    return _entry(
        charger.id,
        c.TransactionChanged(transactionId=tx.transaction_id, action=action, lastUpdatedAt=at),
    )


def transaction_started(
    charger: ChargerRef, tx: TransactionFacts, at: datetime
) -> list[OutboxEntry]:
    """A StartTransaction.req accepted: SessionStartStopNotification and its dotted twin
    (``start``), SessionUpdateNotification (``active``) and transaction.changed (``created``)."""
    return [
        *_session_start_stop(charger, tx, at),
        _session_update(charger, tx, at),
        _transaction_changed(charger, tx, "created", at),
    ]


class _Reading(NamedTuple):
    timestamp: datetime
    measurand: str  # the OCPP measurand
    value: float  # in the catalog's unit


def _readings(meter_values: Iterable[MeterValue]) -> Iterator[_Reading]:
    """The sampled values the catalog names (k-units scaled to Wh / W), phase totals only."""
    for mv in meter_values:
        for sv in mv.sampled_value:
            measurand = "Energy.Active.Import.Register" if sv.measurand is UNSET else sv.measurand
            if measurand not in _MEASURANDS or sv.phase is not UNSET:
                continue  # per-phase values have no place in the catalog's flat list
            try:
                value = float(sv.value) * _SCALE.get(sv.unit, 1.0)  # type: ignore[arg-type]
            except ValueError:
                continue  # SignedData and other non-numeric formats
            yield _Reading(mv.timestamp, measurand, value)


# The readings a session keeps, by OCPP measurand → TransactionFacts field.
_LATEST = {
    "Energy.Active.Import.Register": "meter_wh",
    "Power.Active.Import": "power_w",
    "SoC": "soc_percent",
}


def with_readings(tx: TransactionFacts, meter_values: Iterable[MeterValue]) -> TransactionFacts:
    """``tx`` with ``meter_wh``, ``power_w`` and ``soc_percent`` brought up to date by a
    MeterValues.req (the latest sample of each wins; those not sampled are kept)."""
    latest: dict[str, tuple[datetime, float]] = {}
    for reading in _readings(meter_values):
        field_name = _LATEST.get(reading.measurand)
        if field_name is not None and (
            field_name not in latest or latest[field_name][0] <= reading.timestamp
        ):
            latest[field_name] = (reading.timestamp, reading.value)
    if not latest:
        return tx
    return msgspec.structs.replace(tx, **{name: value for name, (_, value) in latest.items()})


def transaction_meter_values(
    charger: ChargerRef, tx: TransactionFacts, meter_values: Iterable[MeterValue], at: datetime
) -> list[OutboxEntry]:
    """A MeterValues.req inside ``tx`` (whose ``meter_wh`` / ``power_w`` / ``soc_percent`` the
    caller has brought up to date, :func:`with_readings`): SessionMeterValuesNotification with
    the values the catalog names (k-units scaled to Wh / W), and SessionUpdateNotification. No
    values the catalog names: only the update."""
    values = [
        c.SessionMeterValue(
            timestamp=r.timestamp,
            measurand=_MEASURANDS[r.measurand][0],
            value=r.value,
            unit=_MEASURANDS[r.measurand][1],
        )
        for r in _readings(meter_values)
    ]
    entries = []
    if values:
        entries.append(
            _about(
                charger,
                c.SessionMeterValuesNotification,
                evseId=tx.connector_id,
                sessionId=tx.transaction_id,
                meterValues=values,
            )
        )
    entries.append(_session_update(charger, tx, at))
    return entries


def cdr_id(charger: ChargerRef, transaction_id: int) -> str:
    """The CDR id of a transaction: stable, so a retried StopTransaction makes no second CDR."""
    return f"{charger.number}-{transaction_id}"


def transaction_stopped(
    charger: ChargerRef, tx: TransactionFacts, at: datetime
) -> tuple[Cdr, list[OutboxEntry]]:
    """A StopTransaction.req (``tx.stopped_at`` and ``tx.meter_stop`` set): the CDR to insert
    in the ``cdrs`` table and the events — SessionStartStopNotification and its twin
    (``stop``), SessionUpdateNotification (``finished``), transaction.changed (``updated``)
    and cdr.received.

    Raises:
        ValueError: ``tx`` is not stopped.
    """
    if tx.stopped_at is None or tx.meter_stop is None:
        raise ValueError("transaction_stopped needs tx.stopped_at and tx.meter_stop")
    cdr = Cdr(
        id=cdr_id(charger, tx.transaction_id),
        charger_id=charger.id,
        charge_point_id=charger.number,
        transaction_id=tx.transaction_id,
        connector_id=tx.connector_id,
        id_tag=tx.id_tag,
        started_at=tx.started_at,
        stopped_at=tx.stopped_at,
        meter_start_wh=tx.meter_start,
        meter_stop_wh=tx.meter_stop,
        energy_wh=max(0, tx.meter_stop - tx.meter_start),
        stop_reason=tx.stop_reason,
        created_at=at,
        price=tx.price,
    )
    price = None
    if tx.price is not None:
        price = c.CdrPrice(
            currency=tx.price.currency,
            totalExclTax=tx.price.total_excl_tax,
            totalInclTax=tx.price.total_incl_tax,
            tax=tx.price.tax,
            taxPercent=tx.price.tax_percent,
            breakdown=_lines(tx.price),
            flags=list(tx.price.flags),
        )
    return cdr, [
        *_session_start_stop(charger, tx, at),
        _session_update(charger, tx, at),
        _transaction_changed(charger, tx, "updated", at),
        _entry(charger.id, c.CdrReceived(id=cdr.id, createdAt=at, price=price)),
    ]


# Registry changes (operator API, CLI).


def charger_changed(facts: ChargerFacts, action: c.Action, at: datetime) -> list[OutboxEntry]:
    """A charger was created, updated or deleted: chargePoint.changed and the (deprecated,
    fuller) ChargePointChangedNotification."""
    info = c.ChargePointInfo(
        id=facts.number,
        name=facts.description or facts.id,
        networkId=facts.id,
        currentSecurityProfile=facts.security_profile,
        status="disabled" if facts.registration_status == "Rejected" else "active",
        networkStatus=facts.network_status,
        createdAt=facts.created_at,
        lastUpdatedAt=facts.updated_at,
    )
    return [
        _entry(
            facts.id,
            c.ChargePointChanged(
                chargePointId=facts.number, networkId=facts.id, action=action, lastUpdatedAt=at
            ),
        ),
        _entry(
            facts.id,
            c.ChargePointChangedNotification(chargePoint=info, action=action, lastUpdatedAt=at),
        ),
    ]


def id_tag_changed(id_tag_number: int, action: c.Action, at: datetime) -> OutboxEntry:
    """idTag.changed: ``idTagsId`` is the id tag's integer surrogate in the id-tag store."""
    return _entry("", c.IdTagChanged(idTagsId=id_tag_number, action=action, lastUpdatedAt=at))


def reservation_changed(
    charger_id: str,
    reservation_id: int,
    status: Literal["active", "expired", "canceled", "done"],
    at: datetime,
) -> OutboxEntry:
    """reservation.changed: ``active`` when ReserveNow.conf is Accepted, ``canceled`` when
    CancelReservation.conf is Accepted, ``expired`` at its expiry date, ``done`` when a
    StartTransaction.req uses it. Ordered with the charger's other events."""
    return _entry(
        charger_id,
        c.ReservationChanged(reservationId=reservation_id, status=status, lastUpdatedAt=at),
    )


# Load management (issue 18).


def circuit_changed(circuit_id: int, action: c.Action, at: datetime) -> OutboxEntry:
    """circuit.changed: a circuit was created, updated or deleted (not about one charger)."""
    return _entry("", c.CircuitChanged(circuitId=circuit_id, action=action, lastUpdatedAt=at))


class PhaseCurrent(msgspec.Struct, frozen=True, kw_only=True):
    """The current on one phase of a circuit (amperes), and when it was last measured."""

    phase: Literal["L1", "L2", "L3"]
    current: float
    at: datetime | None = None


def circuit_consumption(
    circuit_id: int, max_current: float, min_current: float, phases: Iterable[PhaseCurrent]
) -> OutboxEntry:
    """CircuitConsumptionNotification: a circuit's measured current per phase (its chargers'
    and its sub-circuits')."""
    return _entry(
        "",
        c.CircuitConsumptionNotification(
            circuitId=circuit_id,
            maxCurrent=max_current,
            minChargePointCurrent=min_current,
            currentConsumption=[
                c.PhaseConsumption(
                    phase=p.phase, consumption=p.current, lastUpdatedAt=_unset_if_none(p.at)
                )
                for p in phases
            ],
        ),
    )


class AppliedProfile(msgspec.Struct, frozen=True, kw_only=True):
    """A charging profile sent to a charger: one schedule of constant ``limit`` from the
    start, or the operator's own periods."""

    id: int
    purpose: Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]
    stack_level: int
    kind: Literal["Absolute", "Recurring", "Relative"]
    unit: Literal["A", "W"]
    periods: tuple[tuple[int, float], ...]  # (startPeriod s, limit)
    min_rate: float | None = None
    start: datetime | None = None
    duration: int | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    recurrency: Literal["daily", "weekly"] | None = None


def charging_profile_applied(
    charger: ChargerRef,
    connector_id: int,
    transaction_id: int | None,
    profile: AppliedProfile,
    status: Literal["accepted", "rejected", "unanswered"],
    at: datetime,
) -> OutboxEntry:
    """chargingProfile.applied: a SetChargingProfile's outcome (``status``); ``evseId`` is the
    connector (None for connector 0, the charger as a whole)."""
    return _about(
        charger,
        c.ChargingProfileApplied,
        evseId=connector_id or None,
        sessionId=transaction_id,
        chargingProfile=c.AppliedChargingProfile(
            id=profile.id,
            minChargingRate=profile.min_rate,
            schedulePeriods=[{"startPeriod": s, "limit": v} for s, v in profile.periods],
            scheduleStart=profile.start,
            chargingRateUnit=profile.unit,
            stackLevel=profile.stack_level,
            chargingProfileKind=profile.kind,
            recurrencyKind=profile.recurrency,
            purpose=profile.purpose,
            validTo=profile.valid_to,
            validFrom=profile.valid_from,
            duration=profile.duration,
        ),
        appliedAt=at,
        status=status,
    )


def command_completed(
    charger_id: str,
    command_id: str,
    bulk_command_id: str | None,
    action: str,
    response: bytes | None,
    problem: c.CommandProblem | None,
    at: datetime,
) -> OutboxEntry:
    """command.completed (evgate's, not AMPECO's): ``completed`` with the charger's
    ``response`` payload (JSON), else ``failed`` with its ``problem``. Ordered with the
    charger's other events."""
    return _entry(
        charger_id,
        c.CommandCompleted(
            commandId=command_id,
            bulkCommandId=bulk_command_id,
            networkId=charger_id,
            action=action,
            status="failed" if problem is not None else "completed",
            response=None if response is None else msgspec.Raw(response),
            problem=problem,
            completedAt=at,
        ),
    )


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def location_changed(
    location: Location, charger_numbers: list[int], action: c.Action, at: datetime
) -> OutboxEntry:
    """LocationChangedNotification: ``charger_numbers`` are its chargers' ``number`` (evgate's
    chargers are all public; a disabled location has none it reports as such)."""
    hours: dict[str, list[dict[str, str]]] | None = None
    if not location.opening_hours.always_open:
        hours = {}
        for period in location.opening_hours.periods:
            hours.setdefault(_WEEKDAYS[period.weekday - 1], []).append(
                {"start": period.start, "end": period.end}
            )
    public = charger_numbers if location.status == "active" else []
    info = c.LocationInfo(
        id=location.id,
        public_charge_points=len(public),
        public_charge_points_ids=public,
        name={"en": location.name},
        status=location.status,
        description=UNSET if location.description is None else {"en": location.description},
        geoposition=UNSET
        if location.geoposition is None
        else c.Geoposition(
            latitude=location.geoposition.latitude, longitude=location.geoposition.longitude
        ),
        address={"en": location.address.street},
        post_code=location.address.postal_code,
        region=_unset_if_none(location.address.region),
        city=location.address.city,
        country=location.address.country,
        timezone=location.timezone,
        working_hours=c.WorkingHours(
            is_always_open=location.opening_hours.always_open, hours=hours
        ),
        lastUpdatedAt=location.updated_at,
    )
    return _entry("", c.LocationChangedNotification(location=info, action=action, lastUpdatedAt=at))


def tariff_changed(
    tariff_id: int, tariff: Tariff, updated_at: datetime, action: c.Action, at: datetime
) -> OutboxEntry:
    """TariffChangedNotification. The catalog's terms for evgate's: the per-minute price is a
    price per period of one minute; minimum price, idle fee and grace as named; the validity
    window as the restrictions' dates (``endDate`` inclusive). The catalog has no field for a
    maximum price, a tax percentage or time-of-day prices other than day/night (the type says
    there are some): those are in GET /api/v1/tariffs/{id}."""

    def amount(value: Any) -> Any:
        return value if value else None

    end = None if tariff.valid_to is None else (tariff.valid_to - timedelta(microseconds=1)).date()
    info = c.TariffInfo(
        id=tariff_id,
        name=tariff.name,
        type="duration+energy time of day" if tariff.energy_periods else "duration+energy",
        pricing=c.TariffPricing(
            connectionFee=amount(tariff.connection_fee),
            pricePerKwh=None if tariff.energy_periods else amount(tariff.price_per_kwh),
            pricePeriodInMinutes=1 if tariff.price_per_minute else None,
            pricePerPeriod=amount(tariff.price_per_minute),
            idleFeePerMinute=amount(tariff.idle_fee_per_minute),
            idleFeeGracePeriodMinutes=amount(tariff.idle_grace_minutes),
            minPrice=tariff.min_price,
        ),
        currency=tariff.currency,
        restrictions=c.TariffRestrictions(
            startDate=None if tariff.valid_from is None else tariff.valid_from.date(),
            endDate=end,
        ),
        lastUpdatedAt=updated_at,
    )
    return _entry("", c.TariffChangedNotification(tariff=info, action=action, lastUpdatedAt=at))


# Users and what they pay (issue 20): no charger, so ordered among the operator's own changes.

_USER_STATUS: dict[str, Literal["enabled", "disabled"]] = {
    "active": "enabled",
    "blocked": "disabled",
}


def user_changed(user: User, action: c.Action, at: datetime) -> OutboxEntry:
    """UserChangedNotification: the user as now (as before, for ``deleted``); ``id`` is a
    string in the catalog, ``locale`` the user's language, ``status`` enabled or disabled."""
    info = c.UserInfo(
        id=str(user.id),
        email=user.email,
        firstName=user.first_name,
        lastName=user.last_name,
        phone=user.phone,
        locale=user.language,
        balance=Decimal(user.balance.amount),
        status=_USER_STATUS[user.status],
        userGroupIds=list(user.user_group_ids),
        lastUpdatedAt=user.updated_at,
        createdAt=user.created_at,
    )
    return _entry("", c.UserChangedNotification(user=info, action=action, lastUpdatedAt=at))


# The API's entry types as the catalog names them: a top-up through the public API, a voucher,
# the operator's adjustment (either sign), a priced transaction.
_BALANCE_TYPES: dict[str, c.BalanceType] = {
    "topUp": "api_top_up",
    "voucher": "voucher",
    "adjustment": "add_to_balance",
    "transaction": "transaction",
}


def user_balance_changed(entry: BalanceEntry, at: datetime) -> OutboxEntry:
    """userBalance.changed: a credit (top-up, voucher, positive adjustment) or a debit (a
    priced transaction, a negative adjustment), the balance after it; ``transactionId`` the
    OCPP transaction charged, null for the others."""
    amount = Decimal(entry.amount)
    return _entry(
        "",
        c.UserBalanceChanged(
            debit=-amount if amount < 0 else Decimal(0),
            credit=amount if amount > 0 else Decimal(0),
            updatedBalance=Decimal(entry.balance),
            userId=entry.user_id,
            currency=entry.currency,
            type=_BALANCE_TYPES[entry.type],
            transactionId=entry.transaction_id,
            timestamp=entry.created_at,
            lastUpdatedAt=at,
        ),
    )


def payment_method_changed(
    payment_method_id: int, user_id: int, action: c.Action, at: datetime
) -> OutboxEntry:
    """user.paymentMethod.changed: ``paymentMethodId`` is a string in the catalog."""
    return _entry(
        "",
        c.UserPaymentMethodChanged(
            paymentMethodId=str(payment_method_id), userId=user_id, action=action, lastUpdatedAt=at
        ),
    )


def invoice_details_changed(
    user_id: int, action: Literal["created", "updated"], at: datetime
) -> OutboxEntry:
    """user.invoiceDetails.changed: a user's invoice details made or replaced."""
    return _entry("", c.UserInvoiceDetailsChanged(userId=user_id, action=action, lastUpdatedAt=at))


def subscription_plan_changed(plan_id: int, action: c.Action, at: datetime) -> OutboxEntry:
    """subscriptionPlan.changed (``subscriptionPlanId``: the plan's id)."""
    return _entry(
        "", c.SubscriptionPlanChanged(subscriptionPlanId=plan_id, action=action, lastUpdatedAt=at)
    )


# The deprecated event's statuses: its spelling of canceled; none for pending and suspended.
_DEPRECATED_STATUS: dict[str, Literal["active", "cancelled", "expired"]] = {
    "active": "active",
    "canceled": "cancelled",
    "expired": "expired",
}


def user_subscription_changed(
    user_id: int,
    plan_id: int,
    status: c.UserSubscriptionStatus,
    ends_at: datetime,
    at: datetime,
) -> list[OutboxEntry]:
    """user.subscription.changed, preceded by the deprecated user.subscriptionChanged when
    its status enum has the status (it has neither pending nor suspended)."""
    entries = []
    deprecated = _DEPRECATED_STATUS.get(status)
    if deprecated is not None:
        entries.append(
            _entry(
                "",
                c.UserSubscriptionChangedDeprecated(
                    userId=user_id,
                    planId=plan_id,
                    status=deprecated,
                    endDate=ends_at,
                    lastUpdatedAt=at,
                ),
            )
        )
    entries.append(
        _entry(
            "",
            c.UserSubscriptionChanged(
                userId=user_id, planId=plan_id, status=status, endsAt=ends_at, lastUpdatedAt=at
            ),
        )
    )
    return entries


def partner_changed(
    partner_id: int,
    action: c.Action,
    at: datetime,
    external_id: str | None = None,
    company_name: str | None = None,
) -> list[OutboxEntry]:
    """partner.changed, and PartnerChangedNotification when created or deleted (its enum has
    no updated). Only ``deleted`` carries the partner's externalId and companyName (its name),
    each only when not null, so that a consumer can clean up its records."""
    deleted = action == "deleted"
    entries = [
        _entry(
            "",
            c.PartnerChanged(
                partnerId=partner_id,
                action=action,
                lastUpdatedAt=at,
                externalId=_unset_if_none(external_id if deleted else None),
                companyName=_unset_if_none(company_name if deleted else None),
            ),
        )
    ]
    if action != "updated":
        entries.append(
            _entry(
                "",
                c.PartnerChangedNotification(
                    user=c.PartnerRef(id=str(partner_id)),
                    action=action,
                ),
            )
        )
    return entries


def sub_operator_changed(
    sub_operator_id: int, action: Literal["created", "deleted"], at: datetime
) -> OutboxEntry:
    """SubOperatorChangedNotification (its enum has no updated: a rename emits nothing)."""
    return _entry(
        "",
        c.SubOperatorChangedNotification(
            subOperator=c.SubOperatorRef(id=sub_operator_id), action=action, lastUpdatedAt=at
        ),
    )


def partner_invite_changed(
    invite_id: int, user_id: int | None, email: str, action: c.Action, at: datetime
) -> OutboxEntry:
    """partnerInvite.changed: ``updated`` when accepted (``userId`` the user who accepted) or
    expired; the invite's status is read from the API (the catalog's payload has none)."""
    return _entry(
        "",
        c.PartnerInviteChanged(
            partnerInviteId=invite_id, userId=user_id, email=email, action=action, lastUpdatedAt=at
        ),
    )


def _interval(start: datetime, end: datetime) -> str:
    """[start, end) as an ISO 8601 interval: dates if both are midnight UTC, else UTC
    date-times."""
    bounds = [b.astimezone(UTC) for b in (start, end)]
    if all(b.time() == time() for b in bounds):
        return "/".join(b.date().isoformat() for b in bounds)
    return "/".join(b.isoformat().replace("+00:00", "Z") for b in bounds)


def settlement_report_created(report: SettlementReport) -> OutboxEntry:
    """settlementReport.created for a partner's report (``report.partner_id`` set).

    How the report maps: totalKwhDeliveredAsCPO its energy (kWh, all its CDRs' energy);
    totalKwhDeliveredAsEmsp 0 (evgate does no roaming); revenue is the CDRs' total with tax
    (what the partner is billed), less totalExpenses 0 (evgate books none). The report settles
    the CDRs recorded in its period: totalRevenueCollectedPreviousPeriods is the total of those
    stopped before it (``previous_periods``), totalRevenueCollectedCurrentPeriod and
    totalCollectedBalanceCurrentPeriod the rest; totalRevenue, totalAmount and
    totalCollectedBalancePreviousPeriods (the catalog's "current + previous - expenses") the
    whole. issueDate and lastUpdatedAt its making (a report never changes).
    """
    assert report.partner_id is not None, "a sub-operator's report has no event"
    revenue = Decimal(report.total_incl_tax)
    previous = Decimal(report.previous_periods.total_incl_tax)
    current = revenue - previous
    zero = Decimal(0)
    return _entry(
        "",
        c.SettlementReportCreated(
            id=report.id,
            reportUid=report.report_uid,
            partnerId=report.partner_id,
            issueDate=report.created_at,
            period=_interval(report.period_start, report.period_end),
            totalKwhDeliveredAsCPO=Decimal(report.energy_kwh),
            totalKwhDeliveredAsEmsp=zero,
            totalRevenueCollectedCurrentPeriod=current,
            totalRevenueCollectedPreviousPeriods=previous,
            totalCollectedBalanceCurrentPeriod=current,  # current revenue - expenses
            totalCollectedBalancePreviousPeriods=revenue,  # both periods' revenue - expenses
            totalRevenue=revenue,
            totalExpenses=zero,
            totalAmount=revenue,  # totalRevenue - totalExpenses
            currency=report.currency,
            lastUpdatedAt=report.created_at,
        ),
    )
