"""The routing table is keyed by action, and a table that files a handler under another
action's name is refused when the gateway is made, not on a charger's first such CALL."""

from __future__ import annotations

from typing import Any

import pytest

from evgate.config import load_settings
from evgate.gateway.basic_routes import basic_routes
from evgate.gateway.server import Gateway
from evgate.handlers.contract import ChargerContext, Routes, RoutesError, check_routes
from evgate.handlers.routes import build_routes
from evgate.handlers.services import HandlerServices
from evgate.protocol.v16 import ACTIONS, Direction, HeartbeatRequest, HeartbeatResponse


async def heartbeat(ctx: ChargerContext, request: HeartbeatRequest) -> HeartbeatResponse:
    raise AssertionError("never called")


async def untyped(ctx: ChargerContext, request: Any) -> HeartbeatResponse:
    raise AssertionError("never called")


def test_every_table_evgate_builds_keeps_the_contract() -> None:
    """build_routes (every handler) and basic_routes pass; each handler takes its action's
    request type."""
    # Building the table calls no service: none is needed.
    services = HandlerServices(writer=None, transactions=None, authorizer_for=None)  # type: ignore[arg-type]
    routes = build_routes(services)
    check_routes(routes)
    check_routes(basic_routes())
    assert set(routes) == {
        a for a, s in ACTIONS.items() if Direction.charger_to_csms in s.direction
    }


@pytest.mark.parametrize(
    ("routes", "complaint"),
    [
        ({"BootNotification": heartbeat}, "must take a BootNotificationRequest"),
        ({"Heartbeat": untyped}, "must take a HeartbeatRequest"),
        ({"Reset": heartbeat}, "not an action a charger sends"),
        ({"Heartbeet": heartbeat}, "not an action a charger sends"),
    ],
)
def test_a_misfiled_handler_is_refused_at_start(routes: Routes, complaint: str) -> None:
    """check_routes names the entry; the gateway refuses such a table when it is made."""
    with pytest.raises(RoutesError, match=complaint):
        check_routes(routes)

    async def load(_charger_id: str | None) -> list[Any]:
        return []

    with pytest.raises(RoutesError, match=complaint):
        Gateway(load_settings(environ={}), routes, load)
