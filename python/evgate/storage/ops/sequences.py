"""storage room: the writer's ops that draw ids from sequences in the batch's transaction, for
the events that carry one (a sequence never gives a value back: a retried batch leaves a gap,
which is harmless)."""

from __future__ import annotations

from evgate.storage.ops.base import FetchEach, Write

__all__ = ["AUTHORIZATION_ID", "COMMAND_REQUEST_ID", "authorization_id", "command_request_id"]

_NO_ARGS = ()

#: Result: a new authorizationId (AuthorizationNotification, authorization.changed).
AUTHORIZATION_ID: FetchEach[None, int] = FetchEach(
    "SELECT nextval('authorization_ids')", name="authorization_id", args=lambda _: _NO_ARGS
)

#: Result: a new command request id (GetConfiguration, GetDiagnostics).
COMMAND_REQUEST_ID: FetchEach[None, int] = FetchEach(
    "SELECT nextval('command_request_ids')", name="command_request_id", args=lambda _: _NO_ARGS
)


def authorization_id() -> Write[int]:
    """Draw a new authorizationId."""
    return AUTHORIZATION_ID(None)


def command_request_id() -> Write[int]:
    """Draw a new command request id."""
    return COMMAND_REQUEST_ID(None)
