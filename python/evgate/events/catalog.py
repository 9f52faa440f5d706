"""events room: the notification catalog — every event name a subscription may ask for, what
in evgate emits it, and one msgspec Struct per emitted event's payload.

Names and payload fields are the AMPECO public API's (``reference/ampeco-notification-fields.txt``,
checked by ``tests/events/test_catalog.py``), so a consumer written for that catalog works
unchanged. Field names are spelled exactly as there, snake_case inside ``bootNotification``
included, which is why the Structs' attributes are not Python-style.

Two evgate decisions show in the payloads (see the README's "Notifications"):

* ``chargePointId`` is the charger's ``number``, a stable integer surrogate (the catalog wants an
  integer; a charger's id is its OCPP identity, a string). Every payload that carries
  ``chargePointId`` also carries ``networkId``, the OCPP identity — the name the catalog itself
  uses for it on a charge point — so a consumer needs no look-up to know which charger it was.
* ``evseId`` is the OCPP 1.6 ``connectorId`` (one connector per EVSE in 1.6); ``evse.changed``,
  whose catalog payload has no charger field, carries ``chargePointId`` and ``networkId`` too.

Optional fields evgate does not know are left out (``UNSET``); nullable ones it does not know
are ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "CATALOG",
    "EMITTED",
    "NOT_EMITTED",
    "Event",
]

# Every name a subscription may list → what emits it in evgate (and where), or None: accepted in
# a subscription, never emitted (evgate has no such domain: users, tariffs, locations, ...).
# Events describe changes: a resent or stale message that changes nothing emits nothing
# (except MeterValues, whose resend is stored once but emitted again).
CATALOG: dict[str, str | None] = {
    "AuthorizationNotification": "Authorize.req (handlers/authorize), with authorization.changed",
    "authorization.changed": "Authorize.req (handlers/authorize): action created",
    "BootNotification": "BootNotification.req (handlers/boot)",
    "ChargePointChangedNotification": "charger created / updated / deleted (storage/chargers)",
    "chargePoint.changed": "charger created / updated / deleted (storage/chargers)",
    "evse.changed": "a connector's first StatusNotification.req (handlers/status): created",
    "ChargePointSyncConfigurationNotification": "GetConfiguration command answered or failed"
    " (handlers/commands)",
    "CircuitConsumptionNotification": "every EVGATE_CIRCUIT_CONSUMPTION_INTERVAL while a circuit"
    " has a transaction (handlers/smart_charging)",
    "circuit.changed": "circuit created / updated / deleted (storage/circuits)",
    "DiagnosticsStatusNotification": "DiagnosticsStatusNotification.req (handlers/firmware)",
    "HardwareStatusNotification": "StatusNotification.req changing the status (handlers/status)",
    "LocationChangedNotification": None,
    "NetworkStatusNotification": "charger connected / disconnected (handlers/network observer)",
    "SecurityEventNotification": "SecurityEventNotification.req (handlers/security)",
    "SessionMeterValuesNotification": "MeterValues.req in an open transaction (handlers)",
    "SessionStartStopNotification": "Start/StopTransaction.req (handlers/transactions)",
    "session.start.stop.notification": "Start/StopTransaction.req (handlers/transactions)",
    "SessionUpdateNotification": "Start/StopTransaction.req, MeterValues.req in it (handlers)",
    "UserChangedNotification": None,
    "SubOperatorChangedNotification": None,
    "TariffChangedNotification": None,
    "user.subscriptionChanged": None,
    "user.subscription.changed": None,
    "ReservationChangedNotification": None,
    "PaymentMethodChangedNotification": None,
    "PartnerInviteChangedNotification": None,
    "PartnerChangedNotification": None,
    "reservation.changed": "ReserveNow / CancelReservation accepted (handlers/commands), expiry"
    " (storage/reservations ReservationExpiry), use by StartTransaction.req"
    " (handlers/transactions)",
    "user.paymentMethod.changed": None,
    "userBalance.changed": None,
    "partnerInvite.changed": None,
    "roamingPlatform.changed": None,
    "parkingSpace.occupancyStatus.changed": None,
    "partner.changed": None,
    "transaction.changed": "StartTransaction.req (created), StopTransaction.req (updated)"
    " (handlers/transactions)",
    "settlementReport.created": None,
    "idTag.changed": "id tag created / updated / deleted (storage/id_tags)",
    "chargePoint.dataTransferReceived": "DataTransfer.req from a charger (handlers/data_transfer)",
    "subscriptionPlan.changed": None,
    "user.invoiceDetails.changed": None,
    "cdr.received": "StopTransaction.req closing a transaction: a CDR (GET /api/v1/cdrs/{id})",
    "chargingProfile.applied": "a SetChargingProfile answered or left unanswered: the engine's"
    " (handlers/smart_charging) and the operator's (storage/charging_profiles)",
    "installerJob.changed": None,
}
EMITTED = frozenset(name for name, by in CATALOG.items() if by is not None)
NOT_EMITTED = frozenset(name for name, by in CATALOG.items() if by is None)

Action = Literal["created", "updated", "deleted"]
NetworkStatus = Literal["never connected", "available", "temporarily unavailable",
                        "long-term unavailable"]  # fmt: skip
HardwareStatus = Literal["available", "preparing", "charging", "suspendedEV", "suspendedEVSE",
                         "finishing", "reserved", "unavailable", "faulted"]  # fmt: skip


class Event(msgspec.Struct, kw_only=True, tag_field="notification"):
    """Base of every payload: ``notification`` (the event name) is written first, from the tag."""


# Nested objects.


class BootInfo(msgspec.Struct, kw_only=True):
    model: str
    vendor: str
    charge_box_serial_number: str | None = None
    charge_point_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_serial_number: str | None = None
    meter_type: str | None = None
    reason: str | None = None


class ChargePointInfo(msgspec.Struct, kw_only=True):
    id: int
    name: str
    networkId: str
    networkProtocol: Literal["ocpp 1.6"] = "ocpp 1.6"
    # evgate keeps connectors apart from the registry; evse.changed and HardwareStatusNotification
    # report them.
    evses: list[dict[str, Any]] = msgspec.field(default_factory=list)
    lastBootNotification: BootInfo | None = None
    currentSecurityProfile: int
    # evgate has no access types or owners: every charger is reported as a public one.
    accessType: Literal["public"] = "public"
    status: Literal["active", "disabled"]
    networkStatus: NetworkStatus
    hardwareStatus: Literal["available", "unavailable", "faulted"] | None = None
    createdAt: datetime
    lastUpdatedAt: datetime


class ConfigurationEntry(msgspec.Struct, kw_only=True):
    key: str
    value: str | UnsetType = UNSET
    readonly: bool
    lastUpdatedAt: datetime


class SessionMeterValue(msgspec.Struct, kw_only=True):
    timestamp: datetime
    measurand: str
    value: float
    unit: str


class EnergyConsumption(msgspec.Struct, kw_only=True):
    total: float
    grid: float


class Power(msgspec.Struct, kw_only=True):
    latest: float | None = None


class SessionInfo(msgspec.Struct, kw_only=True):
    id: str
    chargePointId: int
    networkId: str
    evseId: int
    connectorId: int | None
    status: Literal["active", "finished"]
    reason: str | UnsetType = UNSET
    userId: None = None
    startedAt: datetime
    stoppedAt: datetime | None = None
    energy: float
    socPercent: float | UnsetType = UNSET
    authorizationId: None = None
    idTag: str | UnsetType = UNSET
    energyConsumption: EnergyConsumption
    billingStatus: None = None
    power: Power | UnsetType = UNSET
    lastUpdatedAt: datetime


# Payloads, one per emitted event. Those of one charger carry chargePointId and networkId.


class ChargerEvent(Event, kw_only=True):
    chargePointId: int
    networkId: str


class AuthorizationNotification(ChargerEvent, tag="AuthorizationNotification", kw_only=True):
    authorizationId: int
    idTag: str
    status: Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]
    lastUpdatedAt: datetime


class AuthorizationChanged(ChargerEvent, tag="authorization.changed", kw_only=True):
    authorizationId: int
    action: Literal["created", "updated"]
    idTag: str
    status: Literal["accepted", "rejected", "pending"]
    lastUpdatedAt: datetime


class BootNotification(ChargerEvent, tag="BootNotification", kw_only=True):
    timestamp: datetime
    bootNotification: BootInfo


class ChargePointChangedNotification(Event, tag="ChargePointChangedNotification", kw_only=True):
    chargePoint: ChargePointInfo
    action: Action
    lastUpdatedAt: datetime


class ChargePointChanged(ChargerEvent, tag="chargePoint.changed", kw_only=True):
    action: Action
    lastUpdatedAt: datetime


class EvseChanged(ChargerEvent, tag="evse.changed", kw_only=True):
    evseId: int
    action: Action
    lastUpdatedAt: datetime


class ChargePointSyncConfigurationNotification(
    ChargerEvent, tag="ChargePointSyncConfigurationNotification", kw_only=True
):
    requestId: int | UnsetType = UNSET
    configuration: list[ConfigurationEntry] | UnsetType = UNSET
    error: str | UnsetType = UNSET


class DiagnosticsStatusNotification(
    ChargerEvent, tag="DiagnosticsStatusNotification", kw_only=True
):
    requestId: int
    status: Literal["idle", "uploaded", "uploadfailed", "uploading"]
    lastUpdatedAt: datetime


class HardwareStatusNotification(ChargerEvent, tag="HardwareStatusNotification", kw_only=True):
    evseId: int | UnsetType = UNSET
    timestamp: datetime
    hardwareStatus: HardwareStatus
    errorCode: str | None = None
    info: str | None = None
    vendorId: str | None = None
    vendorErrorCode: str | None = None


class NetworkStatusNotification(ChargerEvent, tag="NetworkStatusNotification", kw_only=True):
    timestamp: datetime
    networkStatus: NetworkStatus


class SecurityEventNotification(ChargerEvent, tag="SecurityEventNotification", kw_only=True):
    type: str
    timestamp: datetime
    techInfo: str | UnsetType = UNSET
    critical: bool


class SessionMeterValuesNotification(
    ChargerEvent, tag="SessionMeterValuesNotification", kw_only=True
):
    evseId: int
    sessionId: int
    meterValues: list[SessionMeterValue]


class _SessionStartStop(ChargerEvent, kw_only=True):
    evseId: int
    action: Literal["start", "stop"]
    sessionId: int
    idTag: str | UnsetType = UNSET
    startedAtTimestamp: datetime
    stoppedAtTimestamp: datetime | UnsetType = UNSET
    energyConsumed: float | UnsetType = UNSET
    reason: str | UnsetType = UNSET
    meterStart: int
    meterStop: int
    lastUpdatedAt: datetime


class SessionStartStopNotification(
    _SessionStartStop, tag="SessionStartStopNotification", kw_only=True
):
    pass


class SessionStartStopDotted(
    _SessionStartStop, tag="session.start.stop.notification", kw_only=True
):
    pass


class SessionUpdateNotification(Event, tag="SessionUpdateNotification", kw_only=True):
    session: SessionInfo


class TransactionChanged(Event, tag="transaction.changed", kw_only=True):
    transactionId: int
    action: Literal["created", "updated"]
    lastUpdatedAt: datetime


class DataTransferReceived(ChargerEvent, tag="chargePoint.dataTransferReceived", kw_only=True):
    vendorId: str
    messageId: str | UnsetType = UNSET
    data: str | UnsetType = UNSET


class IdTagChanged(Event, tag="idTag.changed", kw_only=True):
    idTagsId: int
    action: Action
    lastUpdatedAt: datetime


class ReservationChanged(Event, tag="reservation.changed", kw_only=True):
    reservationId: int
    status: Literal["active", "expired", "canceled", "done"]
    lastUpdatedAt: datetime


class PhaseConsumption(msgspec.Struct, kw_only=True):
    phase: Literal["L1", "L2", "L3"]
    consumption: float
    lastUpdatedAt: datetime | UnsetType = UNSET


class CircuitConsumptionNotification(Event, tag="CircuitConsumptionNotification", kw_only=True):
    circuitId: int
    maxCurrent: float
    minChargePointCurrent: float
    currentConsumption: list[PhaseConsumption]


class CircuitChanged(Event, tag="circuit.changed", kw_only=True):
    circuitId: int
    action: Action
    lastUpdatedAt: datetime


class AppliedChargingProfile(msgspec.Struct, kw_only=True):
    id: int
    minChargingRate: float | None = None
    # The catalog leaves the periods' fields open: OCPP's ChargingSchedulePeriod
    # (startPeriod, limit).
    schedulePeriods: list[dict[str, Any]] | None = None
    scheduleStart: datetime | None = None
    chargingRateUnit: Literal["A", "W"]
    stackLevel: int
    chargingProfileKind: Literal["Absolute", "Recurring", "Relative"]
    recurrencyKind: Literal["daily", "weekly"] | None = None
    chargingCompleteAt: datetime | None = None
    purpose: Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]
    validTo: datetime | None = None
    validFrom: datetime | None = None
    duration: int | None = None


class ChargingProfileApplied(ChargerEvent, tag="chargingProfile.applied", kw_only=True):
    evseId: int | None
    sessionId: int | None
    chargingProfile: AppliedChargingProfile
    appliedAt: datetime
    # evgate's addition: the catalog sends this event "for each charging schedule that is sent
    # to the charge point"; ``status`` says what the charger made of it.
    status: Literal["accepted", "rejected", "unanswered"]


class CdrReceived(Event, tag="cdr.received", kw_only=True):
    id: str
    createdAt: datetime


PAYLOAD_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        AuthorizationNotification,
        AuthorizationChanged,
        BootNotification,
        ChargePointChangedNotification,
        ChargePointChanged,
        EvseChanged,
        ChargePointSyncConfigurationNotification,
        DiagnosticsStatusNotification,
        HardwareStatusNotification,
        NetworkStatusNotification,
        SecurityEventNotification,
        SessionMeterValuesNotification,
        SessionStartStopNotification,
        SessionStartStopDotted,
        SessionUpdateNotification,
        TransactionChanged,
        DataTransferReceived,
        IdTagChanged,
        ReservationChanged,
        CdrReceived,
        CircuitConsumptionNotification,
        CircuitChanged,
        ChargingProfileApplied,
    )
}
