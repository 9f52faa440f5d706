"""handlers room: the routing table — every charger-initiated OCPP 1.6J action's handler.

``build_routes(services)`` is called once by ``app.py``; the gateway looks each CALL's action
up in the returned dict (see the contract in ``evgate.handlers``).
"""

from __future__ import annotations

from evgate.handlers import (
    Routes,
    authorize,
    boot,
    data_transfer,
    firmware,
    meter_values,
    security,
    status,
    transactions,
)
from evgate.handlers.security import CertificateService
from evgate.handlers.services import HandlerServices

__all__ = ["build_routes"]


def build_routes(
    services: HandlerServices, certificates: CertificateService | None = None
) -> Routes:
    """The handlers of every action a charger may send (security extension included).

    Args:
        services: the handlers' dependencies.
        certificates: SignCertificate's CA; None answers every SignCertificate ``Rejected``.
    """
    table: Routes = {}
    for module_routes in (
        boot.routes(services),
        status.routes(services),
        authorize.routes(services),
        transactions.routes(services),
        meter_values.routes(services),
        data_transfer.routes(services),
        firmware.routes(services),
        security.routes(services, certificates),
    ):
        table.update(module_routes)
    return table
