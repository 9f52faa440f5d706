"""api room: the services the API's routes use beyond the charger registry, one per group of
routes, typed fields of :class:`~evgate.api.context.ApiContext` (made by ``app.py``).

They live apart from their routes so that ``api/context.py`` can import them while every route
module imports the context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from evgate.storage.cdrs import CdrStore
from evgate.storage.chargers import ChargerStore
from evgate.storage.connectors import ConnectorStore
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.id_tags import IdTagStore
from evgate.storage.locations import LocationStore
from evgate.storage.meter_values import MeterValueStore
from evgate.storage.subscriptions import SubscriptionStore
from evgate.storage.tariffs import TariffStore
from evgate.storage.transactions import TransactionStore

__all__ = ["CdrService", "ChargingApi", "NotificationService", "PricingApi"]


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


@dataclass
class PricingApi:
    """What the location, tariff and tariff-group routes (``api/pricing.py``) need."""

    locations: LocationStore
    tariffs: TariffStore
    # Reloads this process's tariff lookup (storage/pricing.py) after a change, so that a
    # StartTransaction after the answer gets what it says; other processes follow on NOTIFY.
    refresh: Callable[[], Awaitable[None]]
