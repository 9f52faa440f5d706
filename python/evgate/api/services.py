"""api room: the services the API's routes use beyond the charger registry, one per group of
routes, typed fields of :class:`~evgate.api.context.ApiContext` (made by ``app.py``).

They live apart from their routes so that ``api/context.py`` can import them while every route
module imports the context.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from evgate.api.live import LiveFeed
from evgate.gateway.interface import OcppFrame
from evgate.storage.balances import BalanceStore
from evgate.storage.cdrs import CdrStore
from evgate.storage.chargers import ChargerStore, FleetCounts
from evgate.storage.charging_profiles import ChargingProfileStore
from evgate.storage.circuits import CircuitLive, CircuitStore
from evgate.storage.connectors import ConnectorStore
from evgate.storage.db import tenant
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.id_tags import IdTagStore
from evgate.storage.locations import LocationStore
from evgate.storage.meter_values import MeterValueStore
from evgate.storage.partners import PartnerInviteStore, PartnerStore
from evgate.storage.payments import InvoiceDetailsStore, PaymentMethodStore
from evgate.storage.plans import SubscriptionPlanStore, UserSubscriptionStore
from evgate.storage.reservations import ReservationStore
from evgate.storage.settlements import SettlementStore
from evgate.storage.subscriptions import SubscriptionStore
from evgate.storage.tariffs import TariffStore
from evgate.storage.transactions import TransactionStore
from evgate.storage.users import UserGroupStore, UserStore
from evgate.storage.writer import Writer

__all__ = [
    "COUNTS_MAX_AGE",
    "AccountsApi",
    "CdrService",
    "ChargingApi",
    "CircuitService",
    "FleetService",
    "NotificationService",
    "PricingApi",
    "ReservationService",
]


@dataclass
class NotificationService:
    """What the subscription routes (``api/notifications.py``) need."""

    subscriptions: SubscriptionStore
    deliveries: DeliveryStore
    # Called after a subscription changes, so the dispatcher of this process sees it at once.
    changed: Callable[[], None] | None = None


@dataclass
class CdrService:
    """What the CDR routes (``api/cdrs.py``) need."""

    store: CdrStore


@dataclass
class ChargingApi:
    """What the transaction, connector, meter-value and id-tag routes (``api/charging.py``)
    need."""

    chargers: ChargerStore
    transactions: TransactionStore
    connectors: ConnectorStore
    meter_values: MeterValueStore
    id_tags: IdTagStore
    # The operator's stop of a transaction goes through it, as a StopTransaction does.
    writer: Writer
    # Told of a transaction the operator closed (charger id, transaction id), as the
    # StopTransaction handler tells load management (app.py wires it): its allocation ends.
    stopped: Callable[[str, int], None] = lambda _charger_id, _transaction_id: None


def _nothing_live(_circuit_id: int) -> CircuitLive:
    return CircuitLive(allocations=[], consumption=[])


@dataclass
class CircuitService:
    """What the circuit routes (``api/circuits.py``) and the chargers' membership need."""

    store: CircuitStore
    # What this process's smart-charging engine knows of a circuit now (app.py's hook).
    live: Callable[[int], CircuitLive] = _nothing_live
    # The operator's charging profiles (api/charging_profiles.py).
    profiles: ChargingProfileStore | None = None


@dataclass
class ReservationService:
    """What the reservation routes (``api/reservations.py``) need; their commands go through
    ``ApiContext.gateway``, whose answers record what they changed (``handlers/commands.py``)."""

    store: ReservationStore


#: Seconds the fleet's counts may be old (the dashboard asks again later than this after a change).
COUNTS_MAX_AGE = 1.0


@dataclass
class FleetService:
    """What the dashboard's routes (``api/fleet.py``) need of the running process."""

    # The changes of this process's chargers, for the live stream.
    feed: LiveFeed
    # A charger's last OCPP messages both ways (the gateway's in-memory log), None if unknown.
    recent_messages: Callable[[str], list[OcppFrame] | None]
    # How many chargers this process holds.
    connected: Callable[[], int]
    # The fleet's counts are read at most once a second per process and sub-operator (each
    # sees its own fleet), however many browsers ask (each refreshes them on changes):
    # (when, counts) by the sub-operator (None: the operator).
    _counts: dict[int | None, tuple[float, FleetCounts]] = field(default_factory=dict, init=False)
    _counting: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def counts(self, read: Callable[[], Awaitable[FleetCounts]]) -> FleetCounts:
        """The fleet's counts of the sub-operator the request acts for, read with ``read`` if
        those known are older than :data:`COUNTS_MAX_AGE`."""
        async with self._counting:
            known = self._counts.get(tenant())
            if known is None or time.monotonic() - known[0] > COUNTS_MAX_AGE:
                # As of when the read started: a change committed after it is seen by a
                # request made more than COUNTS_MAX_AGE after the change.
                started = time.monotonic()
                known = self._counts[tenant()] = (started, await read())
            return known[1]


@dataclass
class PricingApi:
    """What the location, tariff and tariff-group routes (``api/pricing.py``) need."""

    locations: LocationStore
    tariffs: TariffStore
    # Reloads this process's tariff lookup (storage/pricing.py) after a change, so that a
    # StartTransaction after the answer gets what it says; other processes follow on NOTIFY.
    refresh: Callable[[], Awaitable[None]]


@dataclass
class AccountsApi:
    """What the user, user-group, balance and payment routes (``api/users.py``) and the
    subscription plan (``api/plans.py``), partner (``api/partners.py``) and settlement report
    routes (``api/settlements.py``) need."""

    users: UserStore
    groups: UserGroupStore
    balances: BalanceStore
    payment_methods: PaymentMethodStore
    invoice_details: InvoiceDetailsStore
    plans: SubscriptionPlanStore
    subscriptions: UserSubscriptionStore
    partners: PartnerStore
    invites: PartnerInviteStore
    settlements: SettlementStore
