"""api room: the services the API's routes use beyond the charger registry, one per group of
routes, typed fields of :class:`~evgate.api.context.ApiContext` (made by ``app.py``).

They live apart from their routes so that ``api/context.py`` can import them while every route
module imports the context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evgate.storage.cdrs import CdrStore
from evgate.storage.chargers import ChargerStore
from evgate.storage.charging_profiles import ChargingProfileStore
from evgate.storage.circuits import CircuitLive, CircuitStore
from evgate.storage.connectors import ConnectorStore
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.id_tags import IdTagStore
from evgate.storage.meter_values import MeterValueStore
from evgate.storage.subscriptions import SubscriptionStore
from evgate.storage.transactions import TransactionStore

__all__ = ["CdrService", "ChargingApi", "CircuitService", "NotificationService"]


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
