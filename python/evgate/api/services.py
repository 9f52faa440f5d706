"""api room: the services the API's routes use beyond the charger registry, one per group of
routes, typed fields of :class:`~evgate.api.context.ApiContext` (made by ``app.py``).

They live apart from their routes so that ``api/context.py`` can import them while every route
module imports the context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evgate.storage.balances import BalanceStore
from evgate.storage.cdrs import CdrStore
from evgate.storage.chargers import ChargerStore
from evgate.storage.connectors import ConnectorStore
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.id_tags import IdTagStore
from evgate.storage.meter_values import MeterValueStore
from evgate.storage.partners import PartnerInviteStore, PartnerStore
from evgate.storage.payments import InvoiceDetailsStore, PaymentMethodStore
from evgate.storage.plans import SubscriptionPlanStore, UserSubscriptionStore
from evgate.storage.subscriptions import SubscriptionStore
from evgate.storage.transactions import TransactionStore
from evgate.storage.users import UserGroupStore, UserStore

__all__ = ["AccountsApi", "CdrService", "ChargingApi", "NotificationService"]


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
class AccountsApi:
    """What the user, user-group, balance and payment routes (``api/users.py``) and the
    subscription plan (``api/plans.py``) and partner routes (``api/partners.py``) need."""

    users: UserStore
    groups: UserGroupStore
    balances: BalanceStore
    payment_methods: PaymentMethodStore
    invoice_details: InvoiceDetailsStore
    plans: SubscriptionPlanStore
    subscriptions: UserSubscriptionStore
    partners: PartnerStore
    invites: PartnerInviteStore
