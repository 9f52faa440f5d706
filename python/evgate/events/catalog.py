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

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "CATALOG",
    "EMITTED",
    "EVGATE_EVENTS",
    "EVGATE_PAYLOAD_TYPES",
    "NOT_EMITTED",
    "SUBSCRIBABLE",
    "CommandCompleted",
    "CommandProblem",
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
    "LocationChangedNotification": "location created / updated / deleted (storage/locations)",
    "NetworkStatusNotification": "charger connected / disconnected (handlers/network observer)",
    "SecurityEventNotification": "SecurityEventNotification.req (handlers/security)",
    "SessionMeterValuesNotification": "MeterValues.req in an open transaction (handlers)",
    "SessionStartStopNotification": "Start/StopTransaction.req (handlers/transactions)",
    "session.start.stop.notification": "Start/StopTransaction.req (handlers/transactions)",
    "SessionUpdateNotification": "Start/StopTransaction.req, MeterValues.req in it (handlers)",
    "UserChangedNotification": "user created / updated / deleted (storage/users)",
    "SubOperatorChangedNotification": "a sub-operator created / deleted (storage/sub_operators)",
    "TariffChangedNotification": "tariff created / updated / deleted (storage/tariffs)",
    "user.subscriptionChanged": "a user's subscription set / changed / expired, when its status"
    " is active, canceled or expired (storage/plans)",
    "user.subscription.changed": "a user's subscription set / changed / expired (storage/plans)",
    "ReservationChangedNotification": None,
    "PaymentMethodChangedNotification": None,
    "PartnerInviteChangedNotification": None,
    "PartnerChangedNotification": "a partner created / deleted (storage/partners)",
    "reservation.changed": "ReserveNow / CancelReservation accepted (handlers/commands), expiry"
    " (storage/expiry.py, reservations.expire_due), use by StartTransaction.req"
    " (handlers/transactions)",
    "user.paymentMethod.changed": "a payment method created / updated (also when it stops being"
    " the default) / deleted (storage/payments)",
    "userBalance.changed": "a booked balance entry: POST /api/v1/users/{id}/balance, a priced"
    " stop (storage/balances)",
    "partnerInvite.changed": "a partner invite created / accepted or expired (updated) /"
    " deleted (storage/partners)",
    "roamingPlatform.changed": None,
    "parkingSpace.occupancyStatus.changed": None,
    "partner.changed": "a partner created / updated / deleted (storage/partners)",
    "transaction.changed": "StartTransaction.req (created), StopTransaction.req (updated)"
    " (handlers/transactions)",
    "settlementReport.created": "a partner's settlement report made: on demand (POST"
    " /api/v1/settlement-reports) or by the monthly pass (storage/settlements)",
    "idTag.changed": "id tag created / updated / deleted (storage/id_tags)",
    "chargePoint.dataTransferReceived": "DataTransfer.req from a charger (handlers/data_transfer)",
    "subscriptionPlan.changed": "a subscription plan created / updated / deleted (storage/plans)",
    "user.invoiceDetails.changed": "a user's invoice details created / updated (storage/payments)",
    "cdr.received": "StopTransaction.req closing a transaction: a CDR (GET /api/v1/cdrs/{id})",
    "chargingProfile.applied": "a SetChargingProfile answered or left unanswered: the engine's"
    " (handlers/smart_charging) and the operator's (storage/charging_profiles)",
    "installerJob.changed": None,
}
EMITTED = frozenset(name for name, by in CATALOG.items() if by is not None)
NOT_EMITTED = frozenset(name for name, by in CATALOG.items() if by is None)

# evgate's own events: NOT in AMPECO's catalog (a consumer written for that catalog never asks
# for them), subscribable and delivered like the catalog's. Name → what emits it.
EVGATE_EVENTS: dict[str, str] = {
    "command.completed": "a command sent with Prefer: respond-async, or one charger's command"
    " of a bulk command, completed or failed (api/async_commands; evgate's, not AMPECO's)",
}
#: Every name a subscription may list: the catalog's and evgate's own.
SUBSCRIBABLE = frozenset(CATALOG) | frozenset(EVGATE_EVENTS)

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


class TotalAmount(msgspec.Struct, kw_only=True):
    withTax: Decimal
    withoutTax: Decimal


class TaxInfo(msgspec.Struct, kw_only=True):
    taxPercentage: Decimal


class PriceBreakdownLine(msgspec.Struct, kw_only=True):
    """evgate's breakdown line (the catalog leaves priceBreakdown's items open)."""

    component: str
    quantity: Decimal
    unit: str
    unitPrice: Decimal
    amount: Decimal


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
    # Priced transactions only (a tariff applied): the amount so far while active, the price
    # once finished; JSON numbers with their exact digits (Decimal, never a float).
    amount: Decimal | UnsetType = UNSET
    totalAmount: TotalAmount | UnsetType = UNSET
    tax: TaxInfo | UnsetType = UNSET
    currency: str | UnsetType = UNSET
    priceBreakdown: list[PriceBreakdownLine] | UnsetType = UNSET
    tariffSnapshotId: int | UnsetType = UNSET
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


class CdrPrice(msgspec.Struct, kw_only=True):
    """evgate's addition to cdr.received: the CDR's price, as GET /api/v1/cdrs/{id} shows it."""

    currency: str
    totalExclTax: Decimal
    totalInclTax: Decimal
    tax: Decimal
    taxPercent: Decimal
    breakdown: list[PriceBreakdownLine]
    flags: list[str]


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
    # null: no tariff applied to the transaction (it has no price, which is not a price of 0).
    price: CdrPrice | UnsetType | None = UNSET


class Geoposition(msgspec.Struct, kw_only=True):
    latitude: float
    longitude: float


class WorkingHours(msgspec.Struct, kw_only=True):
    is_always_open: bool
    # weekday ("monday" ...) → [{"start": "HH:MM", "end": "HH:MM"}], when not always open.
    hours: dict[str, list[dict[str, str]]] | None = None


class LocationInfo(msgspec.Struct, kw_only=True):
    id: int
    public_charge_points: int
    public_charge_points_ids: list[int]
    # Locale → text; evgate keeps one text, reported as "en".
    name: dict[str, str]
    status: Literal["active", "disabled"]
    description: dict[str, str] | UnsetType = UNSET
    geoposition: Geoposition | UnsetType = UNSET
    address: dict[str, str]
    post_code: str
    region: str | UnsetType = UNSET
    city: str
    country: str
    timezone: str | None
    working_hours: WorkingHours
    lastUpdatedAt: datetime


class LocationChangedNotification(Event, tag="LocationChangedNotification", kw_only=True):
    location: LocationInfo
    action: Action
    lastUpdatedAt: datetime


class TariffPricing(msgspec.Struct, kw_only=True, omit_defaults=True):
    connectionFee: Decimal | None = None
    pricePerKwh: Decimal | None = None
    pricePeriodInMinutes: int | None = None
    pricePerPeriod: Decimal | None = None
    idleFeePerMinute: Decimal | None = None
    idleFeeGracePeriodMinutes: Decimal | None = None
    minPrice: Decimal | None = None


class TariffRestrictions(msgspec.Struct, kw_only=True):
    startDate: date | None = None
    endDate: date | None = None


class TariffInfo(msgspec.Struct, kw_only=True):
    id: int
    name: str
    type: Literal["duration+energy", "duration+energy time of day"]
    pricing: TariffPricing
    currency: str
    restrictions: TariffRestrictions
    lastUpdatedAt: datetime


class TariffChangedNotification(Event, tag="TariffChangedNotification", kw_only=True):
    tariff: TariffInfo
    action: Action
    lastUpdatedAt: datetime


# Users and what they pay (issue 20). Amounts are numbers in the catalog; evgate's API keeps
# them as decimal strings in the currency's minor unit, and the payloads carry them as JSON
# numbers of the same digits (Decimal, encoded as a number: never rounded through a float).


class UserInfo(msgspec.Struct, kw_only=True):
    id: str
    email: str
    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    locale: str | None = None
    balance: Decimal
    status: Literal["enabled", "disabled"]
    userGroupIds: list[int]
    lastUpdatedAt: datetime
    createdAt: datetime


class UserChangedNotification(Event, tag="UserChangedNotification", kw_only=True):
    user: UserInfo
    action: Action
    lastUpdatedAt: datetime


BalanceType = Literal["transaction", "user_top_up", "api_top_up", "operator_top_up", "voucher",
                      "top_up", "auto_top_up", "add_to_balance", "promo_code",
                      "subscribe_to_plan", "custom_fee"]  # fmt: skip


class UserBalanceChanged(Event, tag="userBalance.changed", kw_only=True):
    debit: Decimal
    credit: Decimal
    updatedBalance: Decimal
    userId: int
    currency: str
    type: BalanceType
    transactionId: int | None = None
    timestamp: datetime
    lastUpdatedAt: datetime


class UserPaymentMethodChanged(Event, tag="user.paymentMethod.changed", kw_only=True):
    paymentMethodId: str
    userId: int
    action: Action
    lastUpdatedAt: datetime


class UserInvoiceDetailsChanged(Event, tag="user.invoiceDetails.changed", kw_only=True):
    userId: int
    action: Literal["created", "updated"]
    lastUpdatedAt: datetime


class SubscriptionPlanChanged(Event, tag="subscriptionPlan.changed", kw_only=True):
    # The reference names this event but lists no fields: evgate's are the *.changed family's
    # (the resource's id, action, lastUpdatedAt), as partner.changed and idTag.changed.
    subscriptionPlanId: int
    action: Action
    lastUpdatedAt: datetime


UserSubscriptionStatus = Literal["active", "canceled", "expired", "pending", "suspended"]


class UserSubscriptionChangedDeprecated(Event, tag="user.subscriptionChanged", kw_only=True):
    userId: int
    planId: int
    status: Literal["active", "cancelled", "expired"]
    endDate: datetime
    lastUpdatedAt: datetime


class UserSubscriptionChanged(Event, tag="user.subscription.changed", kw_only=True):
    userId: int
    planId: int
    status: UserSubscriptionStatus
    endsAt: datetime
    lastUpdatedAt: datetime


class PartnerChanged(Event, tag="partner.changed", kw_only=True):
    partnerId: int
    action: Action
    lastUpdatedAt: datetime
    # Only on deleted, and only those that are not null (the catalog's field behaviour).
    externalId: str | UnsetType = UNSET
    companyName: str | UnsetType = UNSET


class PartnerRef(msgspec.Struct, kw_only=True):
    # The catalog's legacy event names the partner "user"; its id is the partner's, a string.
    id: str


class PartnerChangedNotification(Event, tag="PartnerChangedNotification", kw_only=True):
    user: PartnerRef
    action: Literal["created", "deleted"]


class SubOperatorRef(msgspec.Struct, kw_only=True):
    id: int


class SubOperatorChangedNotification(Event, tag="SubOperatorChangedNotification", kw_only=True):
    subOperator: SubOperatorRef
    action: Literal["created", "deleted"]
    lastUpdatedAt: datetime


class PartnerInviteChanged(Event, tag="partnerInvite.changed", kw_only=True):
    partnerInviteId: int
    userId: int | None
    email: str | None
    action: Action
    lastUpdatedAt: datetime


class SettlementReportCreated(Event, tag="settlementReport.created", kw_only=True):
    """A partner's settlement report (a sub-operator's has none: partnerId is required). How
    evgate's report maps (``events/builders.py`` settlement_report_created): revenue is what the
    priced CDRs of the period cost with tax; evgate has no expenses, no roaming (eMSP) and
    counts a CDR in the period it stopped in (nothing of previous periods)."""

    id: int
    reportUid: str
    partnerId: int
    issueDate: datetime
    # ISO 8601 interval, its end exclusive: "2026-11-01/2026-12-01" (dates when both bounds are
    # midnight UTC), else date-times in UTC.
    period: str
    totalKwhDeliveredAsCPO: Decimal
    totalKwhDeliveredAsEmsp: Decimal
    totalRevenueCollectedCurrentPeriod: Decimal
    totalRevenueCollectedPreviousPeriods: Decimal
    totalCollectedBalanceCurrentPeriod: Decimal
    totalCollectedBalancePreviousPeriods: Decimal
    totalRevenue: Decimal
    totalExpenses: Decimal
    totalAmount: Decimal
    currency: str
    lastUpdatedAt: datetime


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
        LocationChangedNotification,
        TariffChangedNotification,
        UserChangedNotification,
        UserBalanceChanged,
        UserPaymentMethodChanged,
        UserInvoiceDetailsChanged,
        SubscriptionPlanChanged,
        UserSubscriptionChangedDeprecated,
        UserSubscriptionChanged,
        PartnerChanged,
        PartnerChangedNotification,
        PartnerInviteChanged,
        SettlementReportCreated,
        SubOperatorChangedNotification,
        CircuitConsumptionNotification,
        CircuitChanged,
        ChargingProfileApplied,
    )
}


# evgate's own events (EVGATE_EVENTS), not AMPECO's.


class CommandProblem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Why a command failed: ``type`` is one of ``timeout``, ``charger-offline``,
    ``charger-disconnected``, ``charger-busy``, ``callerror`` (with the charger's
    ``errorCode``, ``errorDescription``, ``errorDetails``), ``invalid-response`` (with the
    OCPP ``errorCode`` of the violation), ``refused`` (evgate would not send it),
    ``interrupted`` (the evgate process running it stopped), ``unavailable`` (the database was
    away: not sent) or ``internal-error`` (a bug, logged); ``status`` is the HTTP status the
    synchronous form answers for it."""

    type: Literal[
        "timeout",
        "charger-offline",
        "charger-disconnected",
        "charger-busy",
        "callerror",
        "invalid-response",
        "refused",
        "interrupted",
        "unavailable",
        "internal-error",
    ]
    status: int
    detail: str
    errorCode: str | UnsetType = UNSET
    errorDescription: str | UnsetType = UNSET
    errorDetails: dict[str, Any] | UnsetType = UNSET


class CommandCompleted(Event, tag="command.completed", kw_only=True):
    """evgate's, not AMPECO's: a command of the asynchronous API ended. ``response`` is the
    charger's CALLRESULT payload (``completed``), ``problem`` why it failed (``failed``);
    ``bulkCommandId`` names its bulk command, if any."""

    commandId: str
    bulkCommandId: str | None
    networkId: str
    action: str
    status: Literal["completed", "failed"]
    response: msgspec.Raw | None
    problem: CommandProblem | None
    completedAt: datetime


EVGATE_PAYLOAD_TYPES: dict[str, type[Event]] = {"command.completed": CommandCompleted}
