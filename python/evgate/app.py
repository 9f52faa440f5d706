"""The one place where evgate's rooms are wired together on one event loop.

:class:`Evgate` owns, in start order: the database (embedded or external), the charger
gateway and the API server (whose commands go through the gateway). ``start`` brings them up,
``stop`` takes them down in reverse order. Tests run it in-process; ``evgate serve`` runs it
until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from datetime import timedelta
from functools import partial

import evgate
from evgate import heap
from evgate.api.app import create_api
from evgate.api.async_commands import AsyncCommands
from evgate.api.cdrs import CdrController
from evgate.api.charging import ROUTES as CHARGING_ROUTES
from evgate.api.charging_profiles import ChargingProfileController
from evgate.api.circuits import CircuitController
from evgate.api.context import ApiContext
from evgate.api.live import LiveFeed
from evgate.api.metrics import metrics_api
from evgate.api.notifications import NotificationActions, SubscriptionController
from evgate.api.partners import ROUTES as PARTNER_ROUTES
from evgate.api.plans import ROUTES as PLAN_ROUTES
from evgate.api.pricing import ROUTES as PRICING_ROUTES
from evgate.api.reservations import ReservationController
from evgate.api.server import ApiLimits, ApiServer
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
from evgate.api.settlements import ROUTES as SETTLEMENT_ROUTES
from evgate.api.sub_operators import SubOperatorController
from evgate.api.users import ROUTES as ACCOUNT_ROUTES
from evgate.auth.external import ExternalAuth
from evgate.auth.native import NativeAuthorizer
from evgate.auth.registry import ChargerRegistry
from evgate.config import Settings, parse_durations
from evgate.credentials import digest
from evgate.events.dispatcher import Dispatcher, DispatcherConfig
from evgate.gateway.cluster import Cluster
from evgate.gateway.server import LISTEN_BACKLOG, Gateway
from evgate.handlers.commands import AuthorizationKeys, CommandEffects
from evgate.handlers.network import NetworkStatusRecorder, network_event
from evgate.handlers.routes import build_routes
from evgate.handlers.security import CertificateService
from evgate.handlers.services import HandlerServices
from evgate.handlers.smart_charging import SmartCharging
from evgate.limits import default_connection_caps
from evgate.metrics import LoopLagMonitor, Registry
from evgate.storage.balances import BalanceStore
from evgate.storage.cdrs import CdrStore
from evgate.storage.certificates import CertificateStore
from evgate.storage.chargers import ChargerStore
from evgate.storage.charging_profiles import ChargingProfileStore
from evgate.storage.circuits import CIRCUIT_CHANNEL, CircuitStore
from evgate.storage.cluster import CLUSTER_CHANNEL, ClusterStore
from evgate.storage.commands import CommandStore
from evgate.storage.connectors import ConnectorStore
from evgate.storage.db import CHARGER_CHANNEL, Database
from evgate.storage.deliveries import DeliveryStore
from evgate.storage.embedded import EmbeddedPostgres
from evgate.storage.expiry import Expiry
from evgate.storage.id_tags import ID_TAG_CHANNEL, IdTagStore
from evgate.storage.installations import (
    INSTALLATION_CHANNEL,
    SESSION_END_CHANNEL,
    InstallationStore,
)
from evgate.storage.locations import PRICING_CHANNEL, LocationStore
from evgate.storage.maintenance import Maintenance
from evgate.storage.meter_values import MeterValueStore
from evgate.storage.partners import PartnerInviteStore, PartnerStore
from evgate.storage.payments import InvoiceDetailsStore, PaymentMethodStore
from evgate.storage.plans import SubscriptionPlanStore, UserSubscriptionStore
from evgate.storage.pricing import PricingDirectory
from evgate.storage.reservations import ReservationStore
from evgate.storage.settlements import SettlementStore
from evgate.storage.sub_operators import SubOperatorStore
from evgate.storage.subscriptions import SubscriptionStore
from evgate.storage.tariffs import TariffStore
from evgate.storage.tokens import TokenStore
from evgate.storage.transactions import TRANSACTION_STOP_CHANNEL, TransactionStore
from evgate.storage.users import USER_CHANNEL, UserGroupStore, UserStore
from evgate.storage.writer import Writer, is_outage

__all__ = ["Evgate", "bind_socket", "serve"]

log = logging.getLogger("evgate")


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6 by the host's form), optionally SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Evgate:
    """One evgate process: database, API and gateway on the running event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedPostgres | None = None
        self.db: Database | None = None
        self._api_server: ApiServer | None = None
        self.api_port: int | None = None
        self.metrics = Registry()
        self._loop_lag = LoopLagMonitor(self.metrics)
        self.gateway: Gateway | None = None
        self.cluster: Cluster | None = None
        self.auth: ExternalAuth | None = None
        self.commands: CommandEffects | None = None
        self.async_commands: AsyncCommands | None = None
        self.keys: AuthorizationKeys | None = None
        self.ws_port: int | None = None
        self.dispatcher: Dispatcher | None = None
        self.pricing: PricingDirectory | None = None
        self.writer: Writer | None = None
        self.maintenance: Maintenance | None = None
        self.certificates: CertificateService | None = None
        self.native: NativeAuthorizer | None = None
        self.network: NetworkStatusRecorder | None = None
        # The dashboard's live stream: fed by the gateway and the StatusNotification handler.
        # Its open streams are API requests in flight: at most half the API's cap of those.
        api_cap = settings.api_max_connections or default_connection_caps().api
        self.live = LiveFeed(max_streams=min(100, max(1, api_cap // 2)), metrics=self.metrics)
        self.expiry: Expiry | None = None
        self.smart_charging: SmartCharging | None = None

    async def start(self) -> None:
        """Bring every part up; on failure, take down what had started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        dsn = s.database_url
        if dsn is None:
            # Owned by this process: adopted if a killed evgate left it running, started again
            # if it dies, stopped by stop().
            self.embedded = EmbeddedPostgres(s.data_dir)
            dsn = await self.embedded.open()
        self.db = Database(dsn, s.database_pool_size)
        self.db.health.export(self.metrics)
        await self.db.open(migrate=True)

        chargers = ChargerStore(self.db)
        tokens = TokenStore(self.db)

        # Sessions and meter data (issue 5): the group-commit writer every handler writes
        # through, the meter partitions' maintenance, the native id-tag list (LISTEN first,
        # so that no change between the load and the LISTEN is missed).
        self.writer = Writer(
            dsn,
            committers=s.writer_connections,
            batch_rows=s.writer_batch_rows,
            flush_interval=s.writer_flush_interval,
            queue_rows=s.writer_queue_rows,
            metrics=self.metrics,
            health=self.db.health,
        )
        await self.writer.start()
        self.maintenance = Maintenance(
            self.db,
            retention_days=s.meter_retention_days,
            ahead_days=s.meter_partitions_ahead,
            fold_interval=s.meter_rollup_fold_interval,
        )
        await self.maintenance.run_once()
        self.maintenance.start()
        id_tags = IdTagStore(self.db)
        users = UserStore(self.db)
        native = self.native = NativeAuthorizer(id_tags, users=users)
        await self.db.listen(ID_TAG_CHANNEL, native.on_change, native.reload_soon)
        await self.db.listen(USER_CHANNEL, native.on_user_change, native.reload_soon)
        await native.load()
        if s.ca_cert and s.ca_key:
            self.certificates = CertificateService(
                s.ca_cert,
                s.ca_key,
                self.writer,
                validity=timedelta(days=s.certificate_validity_days),
                # Past a send's longest wait (the call timeout, queueing included).
                claim_for=timedelta(seconds=2 * s.call_timeout + 10),
            )

        # Installations and who may charge (auth/external.py): the handlers ask
        # self.auth.directory.authorizer_for(charger_id), the native list by default.
        self.auth = ExternalAuth(InstallationStore(self.db), native, self.metrics, s)
        transactions = TransactionStore(self.db)
        # Which tariff a StartTransaction snapshots, in memory (LISTEN first, as above).
        self.pricing = PricingDirectory(self.db)
        await self.db.listen(PRICING_CHANNEL, self.pricing.notified, self.pricing.notified)
        await self.pricing.start()
        services = HandlerServices(
            writer=self.writer,
            transactions=transactions,
            authorizer_for=self.auth.directory.authorizer_for,
            heartbeat_interval=s.heartbeat_interval,
            allow_concurrent_tx=s.allow_concurrent_tx,
            after_accepted_boot=self._boot_accepted,
            status_changed=self.live.connector_status,
            tariff_for=self.pricing.snapshot_for,
        )
        # An operator's stop through any process's API reaches the charger's connection here.
        await self.db.listen(
            TRANSACTION_STOP_CHANNEL,
            services.transaction_stop_notified,
            services.transaction_stops_missed,
        )
        routes = build_routes(services, self.certificates)

        # The charger gateway: credentials from the database, kept in sync by its NOTIFYs
        # (LISTEN first, so that no change between the load and the LISTEN is missed).
        # An AuthorizationKey a charger of this process accepted is stored here, whoever sent
        # the command (a routed command's caller may give up before the answer).
        self.keys = AuthorizationKeys(chargers.set_secret_digest, wait=s.call_timeout)
        self.gateway = Gateway(
            s,
            routes,
            chargers.credentials,
            metrics=self.metrics,
            unavailable=is_outage,
            health=self.db.health,
            store_key=self.keys.accepted,
        )
        await self.db.listen(
            CHARGER_CHANNEL, self.gateway.credentials_changed, self.gateway.credentials_reset
        )
        # Events from chargers' connections and from commands' answers (issue 6); the
        # handlers emit the rest. A charger's number is in the gateway's credential index.
        gateway = self.gateway

        def number_of(charger_id: str) -> int | None:
            credentials = gateway.credentials_of(charger_id)
            return None if credentials is None else credentials.number

        self.network = NetworkStatusRecorder(self.writer, number_of, metrics=self.metrics)
        self.gateway.add_observer(self.network)
        self.gateway.add_observer(self.live)
        self.network.start()
        reservations = ReservationStore(self.db)
        # Reservations past their expiry date, users' subscriptions past their end, partner
        # invites pending too long, the last month's settlement reports (made once across the
        # cluster): one task, each with its events.
        user_subscriptions = UserSubscriptionStore(self.db)
        partner_invites = PartnerInviteStore(self.db, timedelta(days=s.partner_invite_days))
        settlements = SettlementStore(self.db)
        self.expiry = Expiry(
            self.db.health,
            {
                "reservation expiry": reservations.expire_due,
                "subscription expiry": user_subscriptions.expire_due,
                "partner invite expiry": partner_invites.expire_due,
                "monthly settlement": settlements.settle_due,
            },
        )
        self.expiry.start()
        await self.db.listen(
            INSTALLATION_CHANNEL, self.auth.directory.notified, self.auth.directory.notified_all
        )
        await self.db.listen(
            SESSION_END_CHANNEL, self.auth.session_end_notified, self.auth.sender.wake
        )
        # Scale-out: the cluster keeps charger ownership in the database and routes commands
        # to whichever process holds the charger; everything that calls chargers uses it.
        self.cluster = Cluster(
            self.gateway,
            ClusterStore(self.db, network_event),
            node_id=s.node_id or socket.gethostname().split(".")[0],
            worker_index=s.worker_index or 0,
            lease=s.ownership_lease,
            call_timeout=s.call_timeout,
            metrics=self.metrics,
        )
        await self.db.listen(CLUSTER_CHANNEL, self.cluster.notified, self.cluster.reset)
        await self.cluster.start()
        await self.auth.start(self.cluster)
        # Load management (issue 18): the engine steers this process's chargers in circuits
        # through the cluster's link; the handlers tell it what happens (services.load).
        circuits = CircuitStore(self.db)
        self.smart_charging = SmartCharging(
            self.cluster,
            circuits,
            number_of,
            consumption_interval=s.circuit_consumption_interval,
            idle_after=s.load_idle_after,
            hysteresis=s.load_hysteresis,
        )
        await self.db.listen(
            CIRCUIT_CHANNEL, self.smart_charging.reload_soon, self.smart_charging.reload_soon
        )
        await self.smart_charging.start()
        self.gateway.add_observer(self.smart_charging)
        services.load = self.smart_charging
        await self.gateway.start(bind_socket(s.ws_host, s.ws_port, reuse_port=s.reuse_port))
        self.ws_port = self.gateway.port
        if self.certificates is not None:
            self.certificates.link = self.cluster
        self._loop_lag.start()

        # Commands from the API, and what their answers change (an AuthorizationKey included).
        self.commands = CommandEffects(
            self.cluster,
            self.writer,
            reservations,
            number_of,
        )
        # Commands in the background (Prefer: respond-async, bulk commands), through the
        # same link, their records in PostgreSQL for every process of the cluster.
        self.async_commands = AsyncCommands(
            self.commands, CommandStore(self.db), runner=self.cluster.instance
        )
        # Notifications: the dispatcher delivers the outbox; the API manages subscriptions.
        # With notification_delivery "process" or "off" another process delivers (it sees new
        # events and changed subscriptions by polling), and this loop keeps to the chargers.
        subscriptions, deliveries = SubscriptionStore(self.db), DeliveryStore(self.db)
        wake: Callable[[], None] = _nothing
        if s.notification_delivery == "inline":
            self.dispatcher = Dispatcher(
                subscriptions, deliveries, _dispatcher_config(s), self.metrics
            )
            self.dispatcher.start()
            wake = self.dispatcher.wake
        elif s.notification_delivery == "process":
            # `evgate serve` gives its workers "off" and starts the delivery process itself:
            # "process" here is an app run by other means (a program of one's own), for which
            # no process delivers.
            log.warning(
                "EVGATE_NOTIFICATION_DELIVERY=process is the delivery process that `evgate"
                " serve` starts; this process, not started by it, delivers no notifications"
                " (inline: deliver here)"
            )
        ctx = ApiContext(
            chargers=chargers,
            registry=ChargerRegistry(chargers),
            tokens=tokens,
            sub_operators=SubOperatorStore(self.db),
            notifications=NotificationService(subscriptions, deliveries, wake),
            cdrs=CdrService(CdrStore(self.db)),
            accounts=AccountsApi(
                users=users,
                groups=UserGroupStore(self.db),
                balances=BalanceStore(self.db),
                payment_methods=PaymentMethodStore(self.db),
                invoice_details=InvoiceDetailsStore(self.db),
                plans=SubscriptionPlanStore(self.db),
                subscriptions=user_subscriptions,
                partners=PartnerStore(self.db),
                invites=partner_invites,
                settlements=settlements,
            ),
            charging=ChargingApi(
                chargers=chargers,
                transactions=transactions,
                connectors=ConnectorStore(self.db),
                meter_values=MeterValueStore(self.db),
                id_tags=id_tags,
                writer=self.writer,
                stopped=services.transaction_closed,
            ),
            reservations=ReservationService(reservations),
            # Checked in memory, never stored: valid where it is set, revoked by no other node.
            bootstrap_digest=digest(s.bootstrap_token) if s.bootstrap_token else None,
            tenant_private_targets=s.tenant_private_targets,
            # As the gateway's unanswered CALLs: a failure only; the outage ends with the
            # successes of the loops that retry (Dependency's quiet rule).
            database_unavailable=partial(self.db.health.failed, seen_by="the API"),
            gateway=self.commands,
            metrics=self.metrics,
            installations=self.auth.installations,
            async_commands=self.async_commands,
            certificates=CertificateStore(self.db),
            fleet=FleetService(
                feed=self.live,
                recent_messages=gateway.recent_messages,
                connected=lambda: len(gateway.connections()),
            ),
            pricing=PricingApi(
                locations=LocationStore(self.db),
                tariffs=TariffStore(self.db),
                refresh=self.pricing.refresh,
            ),
            circuits=CircuitService(
                circuits, self.smart_charging.live, ChargingProfileStore(self.db)
            ),
        )
        api = create_api(
            ctx,
            [
                SubscriptionController,
                NotificationActions,
                CdrController,
                CircuitController,
                ChargingProfileController,
                *CHARGING_ROUTES,
                ReservationController,
                *PRICING_ROUTES,
                *SETTLEMENT_ROUTES,
                SubOperatorController,
            ],
            # Only the operator's tokens (a sub-operator's: 403): who charges and pays.
            operator_route_handlers=[*ACCOUNT_ROUTES, *PLAN_ROUTES, *PARTNER_ROUTES],
        )
        api_sock = bind_socket(s.api_host, s.api_port, reuse_port=s.reuse_port)
        self.api_port = api_sock.getsockname()[1]
        self._api_server = ApiServer(
            api,
            ApiLimits(
                s.api_max_connections or default_connection_caps().api,
                s.api_read_timeout,
                self.metrics,
            ),
            keepalive_timeout=s.api_keepalive_timeout,
            metrics=self.metrics,
        )
        await self._api_server.start(api_sock)

        where = (
            f"embedded PostgreSQL in {self.embedded.pgdata} on 127.0.0.1:{self.embedded.port}"
            if self.embedded
            else "PostgreSQL at EVGATE_DATABASE_URL"
        )
        log.info(
            "evgate %s ready: chargers %s://%s:%d/cp/{chargePointId}?auth={secret}; "
            "API http://%s:%d/api/v1 (docs http://%s:%d/api/docs); database: %s",
            evgate.__version__,
            "wss" if s.tls_cert else "ws",
            s.ws_host,
            self.ws_port,
            s.api_host,
            self.api_port,
            s.api_host,
            self.api_port,
            where,
        )

    def _boot_accepted(self, charger_id: str) -> None:
        """What follows an accepted BootNotification: the offline-configuration push (auth),
        a signed certificate the charger has not received yet, and the TxDefaultProfile of a
        charger in a circuit (load management)."""
        if self.auth is not None:
            self.auth.on_boot_accepted(charger_id)
        if self.certificates is not None:
            self.certificates.on_boot_accepted(charger_id)
        if self.smart_charging is not None:
            self.smart_charging.boot_accepted(charger_id)

    async def stop(self) -> None:
        """Take everything down in reverse order. Safe to call more than once."""
        if self._api_server is not None:
            self.live.close()  # the server waits for its open streams to end
            await self._api_server.stop()
            self._api_server = None
        if self.async_commands is not None:
            # Before the gateway: a command cut short is recorded interrupted, not as its
            # charger's disconnection.
            await self.async_commands.close()
            self.async_commands = None
        if self.gateway is not None:
            await self.gateway.stop()  # in-flight replies first, then 1001 to every charger
            self.gateway = None
        self.commands = None
        if self.smart_charging is not None:
            await self.smart_charging.stop()  # after the gateway: no trigger comes any more
            self.smart_charging = None
        if self.keys is not None:
            await self.keys.stop()  # an AuthorizationKey not stored by now is lost
            self.keys = None
        if self.cluster is not None:
            await self.cluster.stop()  # goodbye: this process's chargers are free at once
            self.cluster = None
        if self.network is not None:
            await self.network.stop()  # after the gateway: its last disconnects are written
            self.network = None
        if self.expiry is not None:
            await self.expiry.stop()
            self.expiry = None
        if self.auth is not None:
            await self.auth.stop()
            self.auth = None
        if self.pricing is not None:
            await self.pricing.stop()
            self.pricing = None
        if self.dispatcher is not None:
            await self.dispatcher.stop()  # before the database: it gives its lanes back
            self.dispatcher = None
        if self.certificates is not None:
            await self.certificates.close()
            self.certificates = None
        if self.maintenance is not None:
            await self.maintenance.stop()
            self.maintenance = None
        if self.native is not None:
            await self.native.close()
            self.native = None
        if self.writer is not None:
            await self.writer.stop()  # after the gateway: its last handlers wait for commits
            self.writer = None
        await self._loop_lag.stop()
        if self.db is not None:
            await self.db.close()
            self.db = None
        if self.embedded is not None:
            await self.embedded.close()
            self.embedded = None


#: Open connections the delivery process's metrics port holds (its scrapers: a few); more are
#: answered 503 and closed, as on the API port.
_METRICS_MAX_CONNECTIONS = 16


def _dispatcher_config(s: Settings) -> DispatcherConfig:
    return DispatcherConfig(
        retry_schedule=parse_durations(s.notification_retry_schedule),
        delivery_timeout=s.notification_delivery_timeout,
        fan_out_batch=s.notification_fan_out_batch,
        lanes_per_subscription=s.notification_lanes_per_subscription,
        lane_batch=s.notification_lane_batch,
        poll_interval=s.notification_poll_interval,
        outbox_retention=s.outbox_retention,
        tenant_private_targets=s.tenant_private_targets,
    )


def _nothing() -> None:
    pass


async def deliver(settings: Settings) -> None:
    """Deliver notifications and nothing else until SIGINT or SIGTERM: the process that
    ``evgate serve`` starts beside its workers for ``notification_delivery = "process"``
    (the supervisor has applied the migrations). Its loop and its core are the dispatcher's
    alone; the workers' loops are the chargers'."""
    if settings.database_url is None:
        raise RuntimeError("evgate deliver needs EVGATE_DATABASE_URL (the supervisor sets it)")
    if settings.notification_delivery_nice:
        os.nice(settings.notification_delivery_nice)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    heap.settle()
    registry = Registry()
    db = Database(settings.database_url, pool_size=4)
    await db.open(migrate=False)
    dispatcher = Dispatcher(
        SubscriptionStore(db), DeliveryStore(db), _dispatcher_config(settings), registry
    )
    # Its metrics on a port of its own: the workers' /metrics cannot show this process's.
    # A port taken by something else costs the metrics, never the delivery.
    metrics_server = ApiServer(
        metrics_api(registry),
        ApiLimits(_METRICS_MAX_CONNECTIONS, settings.api_read_timeout, registry),
        keepalive_timeout=settings.api_keepalive_timeout,
        metrics=registry,
    )
    where = "no metrics"
    try:
        try:
            metrics_sock = bind_socket(
                settings.api_host, settings.notification_delivery_metrics_port
            )
            await metrics_server.start(metrics_sock)  # closes the socket if it cannot
            where = f"metrics http://{settings.api_host}:{metrics_sock.getsockname()[1]}/metrics"
        except Exception as exc:  # the port taken, or its server failed to start
            log.error(
                "the delivery process's metrics port %s:%d: %s; delivering without metrics",
                settings.api_host,
                settings.notification_delivery_metrics_port,
                exc,
            )
        dispatcher.start()
        log.info("evgate %s delivering notifications; %s", evgate.__version__, where)
        await stopping.wait()
    finally:
        await metrics_server.stop()
        await dispatcher.stop()  # before the database: it gives its lanes back
        await db.close()


async def serve(settings: Settings) -> None:
    """Run evgate until SIGINT or SIGTERM, then shut down cleanly."""
    app = Evgate(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    heap.settle()  # before start: what it freezes can be no charger's connection
    await app.start()
    try:
        await stopping.wait()
        log.info("shutting down")
    finally:
        await app.stop()
