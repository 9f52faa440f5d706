"""Helpers of the notification tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from evgate.events.builders import (
    AppliedProfile,
    ChargerFacts,
    ChargerRef,
    OutboxEntry,
    PhaseCurrent,
    authorization,
    boot_notification,
    charger_changed,
    charging_profile_applied,
    circuit_changed,
    circuit_consumption,
    configuration_synced,
    data_transfer,
    diagnostics_status,
    evse_changed,
    hardware_status,
    id_tag_changed,
    invoice_details_changed,
    location_changed,
    network_status,
    partner_changed,
    partner_invite_changed,
    payment_method_changed,
    reservation_changed,
    security_event,
    settlement_report_created,
    sub_operator_changed,
    subscription_plan_changed,
    tariff_changed,
    transaction_meter_values,
    transaction_started,
    transaction_stopped,
    user_balance_changed,
    user_changed,
    user_subscription_changed,
)
from evgate.events.catalog import CATALOG
from evgate.events.dispatcher import DispatcherConfig
from evgate.events.signing import hmac_state, new_webhook_secret
from evgate.pricing import Tariff
from evgate.protocol.v16.enums import (
    ChargePointErrorCode,
    ChargePointStatus,
    DiagnosticsStatus,
    Measurand,
    UnitOfMeasure,
)
from evgate.protocol.v16.messages import (
    BootNotificationRequest,
    DataTransferRequest,
    DiagnosticsStatusNotificationRequest,
    KeyValue,
    MeterValue,
    SampledValue,
    SecurityEventNotificationRequest,
    StatusNotificationRequest,
)
from evgate.storage.balances import BalanceEntry
from evgate.storage.db import Database
from evgate.storage.locations import Address, Geoposition, Location
from evgate.storage.ops.transactions import TransactionFacts
from evgate.storage.outbox import insert_outbox
from evgate.storage.settlements import SettlementPart, SettlementReport
from evgate.storage.subscriptions import SubscriptionRow, SubscriptionStore
from evgate.storage.users import Money, User

TOKEN = "evg_test-token-that-created-the-subscription"
#: The events of users and what they pay, and of sub-operators (issue 20): tested in
#: test_account_events.py and tests/api/test_sub_operators.py, none of a charger's day
#: (test_charger_events_end_to_end.py).
ACCOUNT_EVENTS = frozenset(
    {
        "UserChangedNotification",
        "userBalance.changed",
        "user.paymentMethod.changed",
        "user.invoiceDetails.changed",
        "subscriptionPlan.changed",
        "user.subscriptionChanged",
        "user.subscription.changed",
        "partner.changed",
        "PartnerChangedNotification",
        "partnerInvite.changed",
        "settlementReport.created",
        "SubOperatorChangedNotification",
    }
)
FAST = DispatcherConfig(
    retry_schedule=(0.2, 0.3, 0.4, 0.5, 0.5, 0.5),
    jitter=0.1,
    delivery_timeout=1.0,
    poll_interval=0.02,
    refresh_interval=0.2,
)


async def webhook_subscription(
    subscriptions: SubscriptionStore, url: str, names: Iterable[str] | None = None
) -> SubscriptionRow:
    return await subscriptions.create_subscription(
        via="webhook",
        notifications=list(names or CATALOG),
        callback_url=url,
        kafka=None,
        kafka_password=None,
        webhook_secret=new_webhook_secret(),
        token_hmac_state=hmac_state(TOKEN.encode()),
        created_by=None,
    )


async def make_tenants(db: Database, sub: SubscriptionRow, chargers: Iterable[str]) -> int:
    """Make ``sub`` a new sub-operator's, and ``chargers`` (registered now) that tenant's: a
    tenant's subscription keeps the lane path (one ``deliveries`` row per event), where the
    operator's is streamed from a cursor. Returns the sub-operator's id."""
    tenant: int = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('t') RETURNING id")
    await db.execute("UPDATE subscriptions SET sub_operator_id = $2 WHERE id = $1", sub.id, tenant)
    for charger in chargers:
        await db.execute(
            "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ($1, $2, $3)",
            charger,
            b"x" * 32,
            tenant,
        )
    return tenant


def kafka_settings(bootstrap: str, topic: str, **extra: Any) -> dict[str, Any]:
    """A Kafka subscription's settings: plaintext to ``bootstrap``, gzip, and ``extra``."""
    return {
        "topic": topic,
        "brokers": [bootstrap],
        "compressionCodec": "gzip",
        "securityProtocol": "PLAINTEXT",
        "saslMechanism": None,
        "saslUsername": None,
        **extra,
    }


async def kafka_subscription(
    subscriptions: SubscriptionStore,
    kafka: dict[str, Any],
    password: str | None = None,
    names: Iterable[str] | None = None,
) -> SubscriptionRow:
    return await subscriptions.create_subscription(
        via="kafka",
        notifications=list(names or CATALOG),
        callback_url=None,
        kafka=kafka,
        kafka_password=password,
        webhook_secret=new_webhook_secret(),
        token_hmac_state=None,
        created_by=None,
    )


async def emit(db: Database, entries: Iterable[OutboxEntry]) -> None:
    """Append events in one transaction, as a handler's writer submission does."""
    async with db.pool.acquire() as conn, conn.transaction():
        await insert_outbox(conn, entries)


def verify_standard_webhook(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check a receiver makes, written from the specification."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig.partition(",")[2], expected)
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )


def verify_x_signature(token: str, headers: dict[str, str], body: bytes) -> bool:
    """The catalog's check: hex HMAC-SHA256 of the body keyed with the API token."""
    expected = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-signature"], expected)


AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CP = ChargerRef("CP-1", 7)


def at(i: int) -> datetime:
    """The i-th second of 2025: event payloads carry it to show their order."""
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i)


LOCATION = Location(
    id=2,
    name="Car park",
    address=Address(street="Main 1", city="Utrecht", postal_code="3511", country="NL"),
    geoposition=Geoposition(latitude=52.09, longitude=5.12),
    timezone="Europe/Amsterdam",
    tariff_group_id=None,
    charger_ids=("CP-1",),
    created_at=AT,
    updated_at=AT,
)
TARIFF = Tariff(name="Standard", currency="EUR", price_per_kwh=Decimal("0.30"))


def every_event(charger: ChargerRef = CP, transaction_id: int = 41) -> list[OutboxEntry]:
    """One or more outbox entries of every event evgate emits, about ``charger``."""
    tx = TransactionFacts(
        transaction_id=transaction_id,
        connector_id=1,
        id_tag="TAG1",
        started_at=AT,
        meter_start=1000,
        meter_wh=1500.0,
        power_w=7200.0,
    )
    stopped = msgspec.structs.replace(tx, stopped_at=AT, meter_stop=2500, stop_reason="Local")
    facts = ChargerFacts(
        id=charger.id,
        number=charger.number,
        description="bay 1",
        security_profile=1,
        registration_status="Accepted",
        network_status="available",
        created_at=AT,
        updated_at=AT,
    )
    meter = MeterValue(
        timestamp=AT,
        sampled_value=[
            SampledValue(value="1.5", measurand=Measurand("Energy.Active.Import.Register"),
                         unit=UnitOfMeasure("kWh")),
            SampledValue(value="7.2", measurand=Measurand("Power.Active.Import"),
                         unit=UnitOfMeasure("kW")),
        ],
    )  # fmt: skip
    _, stop_entries = transaction_stopped(charger, stopped, AT)
    return [
        boot_notification(
            charger,
            BootNotificationRequest(charge_point_vendor="V", charge_point_model="M"),
            AT,
        ),
        network_status(charger, True, AT),
        hardware_status(
            charger,
            StatusNotificationRequest(
                connector_id=1,
                error_code=ChargePointErrorCode("NoError"),
                status=ChargePointStatus("Charging"),
            ),
            AT,
        ),
        evse_changed(charger, 1, "created", AT),
        *transaction_started(charger, tx, AT),
        *transaction_meter_values(charger, tx, [meter], AT),
        *stop_entries,
        data_transfer(charger, DataTransferRequest(vendor_id="acme", message_id="m", data="d")),
        diagnostics_status(
            charger,
            DiagnosticsStatusNotificationRequest(status=DiagnosticsStatus("Uploaded")),
            3,
            AT,
        ),
        security_event(
            charger,
            SecurityEventNotificationRequest(type="ResetOrReboot", timestamp=AT),
        ),
        configuration_synced(
            charger, [KeyValue(key="HeartbeatInterval", readonly=False, value="60")], AT, 5
        ),
        *authorization(charger, 9, "TAG1", "Accepted", AT),
        id_tag_changed(12, "created", AT),
        *charger_changed(facts, "updated", AT),
        reservation_changed(charger.id, 4, "active", AT),
        location_changed(LOCATION, [charger.number], "created", AT),
        tariff_changed(3, TARIFF, AT, "updated", AT),
        *account_events(),
        charging_profile_applied(
            charger,
            1,
            41,
            AppliedProfile(
                id=101,
                purpose="TxProfile",
                stack_level=50,
                kind="Relative",
                unit="A",
                periods=((0, 10.6),),
            ),
            "accepted",
            AT,
        ),
        circuit_changed(1, "created", AT),
        circuit_consumption(1, 32.0, 6.0, [PhaseCurrent(phase="L1", current=9.8, at=AT)]),
    ]


def account_events() -> list[OutboxEntry]:
    """One or more outbox entries of each event of users and what they pay (no charger)."""
    user = User(
        id=3, email="ada@example.com", first_name="Ada", last_name=None, phone=None,
        language="en-GB", status="active", user_group_ids=[1], prepaid=True, currency="EUR",
        balance=Money("10.00", "EUR"), partner_id=None, created_at=AT, updated_at=AT,
    )  # fmt: skip
    entry = BalanceEntry(
        id=1, user_id=3, type="topUp", amount="10.00", balance="10.00", currency="EUR",
        transaction_id=None, created_at=AT,
    )  # fmt: skip
    report = SettlementReport(
        id=4, report_uid="SR-4", partner_id=6, sub_operator_id=None, kind="monthly",
        period_start=AT - timedelta(days=30), period_end=AT, currency="EUR", transactions=2,
        energy_kwh="15.000", total_excl_tax="4.50", tax="0.90", total_incl_tax="5.40",
        previous_periods=SettlementPart(
            transactions=1, energy_kwh="5.000", total_excl_tax="1.50", tax="0.30",
            total_incl_tax="1.80",
        ),
        created_at=AT,
    )  # fmt: skip
    return [
        user_changed(user, "created", AT),
        user_balance_changed(entry, AT),
        payment_method_changed(5, 3, "created", AT),
        invoice_details_changed(3, "created", AT),
        subscription_plan_changed(2, "created", AT),
        *user_subscription_changed(3, 2, "active", AT, AT),
        *partner_changed(6, "created", AT),
        partner_invite_changed(8, None, "ada@example.com", "created", AT),
        settlement_report_created(report),
        sub_operator_changed(3, "created", AT),
    ]
