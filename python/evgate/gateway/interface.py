"""gateway room: what other rooms may know of the gateway, without importing picows.

The API and the notifications room depend on this module only: a :class:`ConnectionInfo` per
connected charger, the :class:`ChargerLink` interface (``connection`` lookup and ``call``
coroutine) that :class:`evgate.gateway.server.Gateway` implements, the observer interface,
and the typed errors ``call`` raises.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import msgspec

from evgate.credentials import key_problem
from evgate.protocol.errors import OcppError
from evgate.protocol.v16 import ChangeConfigurationRequest, Message

__all__ = [
    "AUTHORIZATION_KEY",
    "MOVED",
    "REPLACED",
    "TAKEN_OVER",
    "CallRejected",
    "CallTimeout",
    "ChargerBusy",
    "ChargerDisconnected",
    "ChargerLink",
    "ChargerNotConnected",
    "CommandError",
    "ConnectionInfo",
    "ConnectionObserver",
    "InvalidCommand",
    "InvalidResponse",
    "OcppFrame",
    "authorization_key",
]

#: The configuration key of the Basic-auth password (OCPP 1.6 security whitepaper).
AUTHORIZATION_KEY = "authorizationkey"


def authorization_key(request: Message) -> str | None:
    """The new Basic-auth password a command sets (a ChangeConfiguration of AuthorizationKey),
    or None.

    Raises:
        InvalidCommand: a key that breaks ``credentials.key_problem`` (refused before it is
            sent).
    """
    if isinstance(request, ChangeConfigurationRequest) and request.key.lower() == AUTHORIZATION_KEY:
        problem = key_problem(request.value)
        if problem is not None:
            raise InvalidCommand(f"AuthorizationKey {problem}")
        return request.value
    return None


#: Close reasons of a connection taken over by a newer one of the same charger: here
#: (``REPLACED``) or in another evgate process (``MOVED``). Observers may tell such a
#: disconnect from the charger going away.
REPLACED = "replaced"
MOVED = "connected to another evgate"
TAKEN_OVER = frozenset({REPLACED, MOVED})


class ConnectionInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A live charger connection, as the API shows it.

    Attributes:
        charger_id: the charger's id.
        connected_at: when the WebSocket upgrade completed (UTC).
        remote_address: the charger's IP address (and port), as seen by evgate.
        security_profile: the OCPP security profile this connection meets: 1 plain ws with a
            secret, 2 TLS with a secret, 3 TLS with a client certificate naming the charger.
        held_by: the evgate process holding it (``node.worker.random``), when known.
    """

    charger_id: str
    connected_at: datetime
    remote_address: str
    security_profile: int
    # The evgate process (instance) holding the connection, when known.
    held_by: str | None = None


class OcppFrame(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One OCPP message to or from a charger, as the gateway's in-memory log kept it.

    Attributes:
        at: when it was received or sent (UTC).
        direction: ``in`` from the charger, ``out`` to it.
        text: the message as it was on the wire (invalid UTF-8 replaced), its first 2 KiB.
        size: its size in bytes (more than ``text`` holds when it was cut).
    """

    at: datetime
    direction: str
    text: str
    size: int


class ConnectionObserver(Protocol):
    """Told when a charger connects and disconnects. Called synchronously on the loop: must
    not block or raise (an exception is logged and ignored); schedule any I/O on a task that
    the observer owns."""

    def charger_connected(self, info: ConnectionInfo) -> None: ...

    def charger_disconnected(self, info: ConnectionInfo, close_code: int, reason: str) -> None: ...


class ChargerLink(Protocol):
    """The gateway as the API uses it."""

    def connection(self, charger_id: str) -> ConnectionInfo | None:
        """The charger's live connection, or ``None`` when it is not connected here."""
        ...

    async def locate(self, charger_id: str) -> ConnectionInfo | None:
        """The charger's live connection to any evgate process sharing the database."""
        ...

    async def call(self, charger_id: str, request: Message) -> Message:
        """Send a CALL to the charger and return its validated CALLRESULT payload.

        Raises:
            CommandError: one of its subclasses, each mapped to its own HTTP status.
        """
        ...


class CommandError(Exception):
    """A command to a charger failed; the subclass says why."""


class ChargerNotConnected(CommandError):
    """The charger has no live connection to this process."""


class ChargerDisconnected(CommandError):
    """The connection closed before the charger answered (it may or may not have acted)."""


class CallTimeout(CommandError):
    """No answer came within ``Settings.call_timeout`` (queueing included)."""


class ChargerBusy(CommandError):
    """Too many commands are already queued for this charger."""


class InvalidCommand(CommandError):
    """The request is refused before it is sent (for example a weak AuthorizationKey)."""


class CallRejected(CommandError):
    """The charger answered with a CALLERROR.

    Attributes:
        code: the CALLERROR's error code as the charger sent it.
        description: its error description.
        details: its error details object.
    """

    def __init__(self, code: str, description: str, details: dict[str, Any]) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


class InvalidResponse(CommandError):
    """The charger's CALLRESULT does not conform to the action's response schema.

    Attributes:
        error: the validation error, with the OCPP code strict decoding chose.
    """

    def __init__(self, error: OcppError) -> None:
        super().__init__(error.description)
        self.error = error
