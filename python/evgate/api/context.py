"""api room: what the API's routes may use, handed in by ``app.py`` (the only wiring place)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from litestar.di import NamedDependency

from evgate.api.async_commands import AsyncCommands
from evgate.api.services import (
    AccountsApi,
    CdrService,
    ChargingApi,
    CircuitService,
    FleetService,
    NotificationService,
    PricingApi,
    ReservationService,
)
from evgate.auth.installations import Installations
from evgate.auth.registry import ChargerRegistry
from evgate.gateway.interface import ChargerLink
from evgate.metrics import Registry
from evgate.storage.certificates import CertificateStore
from evgate.storage.chargers import ChargerStore
from evgate.storage.errors import DatabaseUnavailable
from evgate.storage.sub_operators import SubOperatorStore
from evgate.storage.tokens import TokenStore

__all__ = ["ApiContext", "Ctx", "unreported"]


def unreported(_: DatabaseUnavailable) -> None:
    """An API run with no process health to report to (tests of the API alone; the delivery
    process's metrics, which read no database)."""


@dataclass(kw_only=True)
class ApiContext:
    """The services behind the API, one typed field each: a new group of routes adds its
    service (``api/services.py``) here."""

    chargers: ChargerStore
    registry: ChargerRegistry
    tokens: TokenStore
    # Sub-operators, the tenants that tokens may be scoped to (api/sub_operators.py).
    sub_operators: SubOperatorStore
    # Subscriptions and deliveries (api/notifications.py).
    notifications: NotificationService
    # Charge detail records (api/cdrs.py).
    cdrs: CdrService
    # Commands in the background: Prefer: respond-async and bulk commands, and their records
    # (issue 21.5, api/async_commands.py).
    async_commands: AsyncCommands
    # Certificates signed for chargers and their delivery (issue 21.6, api/certificates.py).
    certificates: CertificateStore
    # Transactions, connectors, meter values and id-tags (api/charging.py).
    charging: ChargingApi
    # Reservations (api/reservations.py).
    reservations: ReservationService
    # Users, user groups and balances (api/users.py).
    accounts: AccountsApi
    # The digest of this process's EVGATE_BOOTSTRAP_TOKEN (checked in memory), None if unset.
    bootstrap_digest: bytes | None = None
    # The charger gateway (live connections, commands); None in an API run without one.
    gateway: ChargerLink | None = None
    # The process's metrics, served on /metrics.
    metrics: Registry = field(default_factory=Registry)
    # Installations and their authorization modes (issue 7); None in an API run without them.
    installations: Installations | None = None
    # The dashboard's live stream and message logs (api/fleet.py); None without a gateway.
    fleet: FleetService | None = None
    # Locations, tariffs and tariff groups (issue 19); None in an API run without them.
    pricing: PricingApi | None = None
    # Circuits and the chargers in them (api/circuits.py, issue 18); None in an API run
    # without them.
    circuits: CircuitService | None = None
    # EVGATE_TENANT_PRIVATE_TARGETS: a sub-operator's token may name private hosts as callback,
    # broker or webhook targets (api/targets.py).
    tenant_private_targets: bool = False
    # Told of each request answered 503 because the database was unavailable: the process's
    # view of PostgreSQL (app.py: ``Database.health``), which every other user of the
    # database reports to as well, so that its metrics and its one outage line count it.
    database_unavailable: Callable[[DatabaseUnavailable], None] = unreported


# How a route asks for the context: ``async def route(ctx: Ctx, ...)``.
Ctx = NamedDependency[ApiContext]
