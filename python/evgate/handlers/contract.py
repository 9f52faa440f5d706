"""handlers room: the contract between the gateway and the handlers (both sides keep to it).

It is the one module of ``handlers/`` the gateway imports: the gateway knows a routing table's
shape, never a handler.

* A handler is ``async def handler(ctx: ChargerContext, request: <Action>Request) ->
  <Action>Response``. The gateway calls the handlers of one connection one at a time, in the
  order the CALLs arrived, and sends the returned response as the CALLRESULT.
* A handler that changes state returns only after its rows (and its events) have committed
  (ARCHITECTURE rule 1: ack after commit). It awaits the group-commit writer for that, with
  one submission per message: the state rows and the outbox rows describing them
  (``HandlerServices.emit``).
* A handler raises :class:`evgate.protocol.errors.OcppError` subclasses for a CALLERROR it means
  to send; an exception that says the database is away (``storage.writer.is_outage``, wired
  in by ``app.py``) leaves the CALL unanswered, so the charger resends it; any other
  exception becomes ``InternalError`` with nothing internal leaked.
* The routing table is a plain ``dict[str, Handler]`` keyed by action, built once at start
  (``build_routes``); an action without an entry answers ``NotImplemented``. The gateway
  checks it when it is made (:func:`check_routes`): each key is an action a charger sends and
  its handler's ``request`` is annotated with that action's request type, so a handler filed
  under the wrong action fails at start, not on a charger's first such CALL.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from evgate.events.builders import ChargerRef
from evgate.protocol.v16 import ACTIONS, Direction

__all__ = ["ChargerContext", "Handler", "Routes", "RoutesError", "check_routes"]


@dataclass(slots=True, eq=False)
class ChargerContext:
    """What a handler knows of the charger whose CALL it handles. One per connection, made by
    the gateway at connect time; handlers may keep small per-connection state in ``state``."""

    charger_id: str
    remote_address: str = ""
    security_profile: int = 1
    lenient: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    # The charger's ``chargers.number`` (the events' chargePointId), from the credentials.
    number: int = 0

    @property
    def charger(self) -> ChargerRef:
        """The charger as the event builders name it."""
        return ChargerRef(self.charger_id, self.number)


Handler = Callable[[ChargerContext, Any], Awaitable[Any]]
Routes = dict[str, Handler]


class RoutesError(ValueError):
    """A routing table that does not keep the contract (a programming error, found at start)."""


def check_routes(routes: Routes) -> None:
    """Check that each key of ``routes`` is an action a charger sends, and that its handler's
    second parameter is annotated with that action's request type.

    Raises:
        RoutesError: naming the first action whose entry breaks the contract.
    """
    for action, handler in routes.items():
        spec = ACTIONS.get(action)
        if spec is None or Direction.charger_to_csms not in spec.direction:
            raise RoutesError(f"{action!r} is not an action a charger sends")
        parameters = list(inspect.signature(handler).parameters)
        hints = get_type_hints(handler) if len(parameters) == 2 else {}
        request = hints.get(parameters[1]) if hints else None
        if request is not spec.request:
            name = getattr(handler, "__qualname__", repr(handler))
            raise RoutesError(
                f"the {action} handler {name} must take a {spec.request.__name__},"
                f" not {getattr(request, '__name__', request)!r}"
            )
