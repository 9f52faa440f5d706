"""api room: the fleet as the dashboard shows it — counts, the live stream, a charger's messages.

* ``GET /api/v1/fleet``: chargers by network status, connectors by status, and how many
  chargers this process holds;
* ``GET /api/v1/events/stream``: server-sent events (``text/event-stream``) of this process's
  chargers' changes as they happen (``status``, ``network``; ``resync`` when the reader was too
  slow and lost some), from :class:`~evgate.api.live.LiveFeed`. It needs the bearer token like
  every route, so a browser reads it with ``fetch`` (``EventSource`` cannot send the header);
* ``GET /api/v1/chargers/{id}/messages``: the charger's last OCPP messages both ways, from the
  gateway's in-memory log of the process holding it (never stored).

Its service is ``ApiContext.fleet`` (:class:`~evgate.api.services.FleetService`).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from litestar import Controller, get
from litestar.params import FromPath
from litestar.response import Stream

from evgate.api.context import ApiContext, Ctx
from evgate.api.live import ConnectionChange, LiveFeed, StatusChange, StreamEnded
from evgate.api.problems import ApiError
from evgate.api.services import FleetService
from evgate.gateway.interface import OcppFrame
from evgate.storage.chargers import FleetCounts
from evgate.storage.db import tenant
from evgate.storage.errors import DatabaseUnavailable

__all__ = ["FLEET_ROUTES", "FleetController", "LiveController", "MessageController"]

#: A comment line this often keeps an idle stream open through proxies, and finds a reader
#: that left (its write fails).
KEEPALIVE = 15.0
#: Seconds a sub-operator's stream trusts the list of its chargers it read; and the least
#: between two reads prompted by changes of chargers not in it.
OWNED_MAX_AGE = 5.0
OWNED_RETRY = 1.0


class FleetView(msgspec.Struct, kw_only=True, rename="camel"):
    """The fleet at a glance."""

    counts: FleetCounts
    # Chargers connected to the evgate process that answered (of all: counts.network).
    connected_here: int


class RecentMessages(msgspec.Struct, kw_only=True, rename="camel"):
    """A charger's last OCPP messages, oldest first.

    ``heldBy`` names the evgate process holding the charger when another one does: its log
    is there, and this list is empty.
    """

    charger_id: str
    messages: list[OcppFrame]
    held_by: str | None = None


def _fleet(ctx: ApiContext) -> FleetService:
    if ctx.fleet is None:
        raise ApiError("this API runs without a charger gateway", 503)
    return ctx.fleet


class FleetController(Controller):
    path = "/api/v1/fleet"
    tags = ["fleet"]

    @get(
        "/",
        summary="Chargers by network status and connectors by status (at most a second old)",
        opt={"problems": (503,)},
    )
    async def summary(self, ctx: Ctx) -> FleetView:
        fleet = _fleet(ctx)
        counts = await fleet.counts(ctx.chargers.counts)
        if tenant() is None:
            return FleetView(counts=counts, connected_here=fleet.connected())
        # A sub-operator's: of its own chargers (the gateway holds every tenant's).
        gateway = ctx.gateway
        ids = await ctx.chargers.ids()
        held = 0 if gateway is None else sum(gateway.connection(c) is not None for c in ids)
        return FleetView(counts=counts, connected_here=held)


class LiveController(Controller):
    path = "/api/v1/events"
    tags = ["fleet"]

    @get(
        "/stream",
        summary="Chargers' changes as server-sent events (this process's chargers)",
        description=(
            "text/event-stream: `status` (a connector's committed status change), `network` (a"
            " charger connected or went away), `resync` (changes were lost: reload). Each"
            " event's data is a JSON object whose `type` names it."
        ),
        media_type="text/event-stream",
        # Not in the OpenAPI document: an answer that never ends has no schema there, and a
        # client generated from it (or a fuzzer) would wait for its end. README documents it.
        include_in_schema=False,
    )
    async def stream(self, ctx: Ctx) -> Stream:
        feed = _fleet(ctx).feed
        if feed.full:
            raise ApiError(f"{feed.max_streams} live streams are open; retry later", 503)
        shown = None if tenant() is None else _TenantChargers(ctx.chargers.ids).shows
        return Stream(
            _events(feed, shown),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


class _TenantChargers:
    """Which chargers a sub-operator's live stream shows: its own, as the store reads them for
    it (row-level security). The feed carries every charger of the process; their ids are
    read again when older than :data:`OWNED_MAX_AGE` (a charger moved to another tenant stops
    showing), and sooner for a charger not among them (one the tenant just made), at most
    every :data:`OWNED_RETRY` seconds however many other chargers change."""

    def __init__(self, read: Callable[[], Awaitable[set[str]]]) -> None:
        self._read = read
        self._ids: set[str] = set()
        self._read_at = -math.inf

    async def shows(self, charger_id: str) -> bool:
        age = time.monotonic() - self._read_at
        if age > OWNED_MAX_AGE or (charger_id not in self._ids and age > OWNED_RETRY):
            self._read_at = time.monotonic()
            try:
                self._ids = await self._read()
            except DatabaseUnavailable:
                pass  # the stream goes on with the ids it has (none at first); read later
        return charger_id in self._ids


async def _events(
    feed: LiveFeed, shown: Callable[[str], Awaitable[bool]] | None = None
) -> AsyncIterator[bytes]:
    """The stream's bytes: a first comment (the browser knows it is open), then each change
    (of a charger ``shown`` accepts, if given) as an SSE event, a keep-alive comment when there
    is none."""
    yield b": live\n\n"
    with feed.stream() as stream:
        while True:
            try:
                change = await stream.next(KEEPALIVE)
            except StreamEnded:
                return
            if change is None:
                yield b": keepalive\n\n"
                continue
            if (
                shown is not None
                and isinstance(change, StatusChange | ConnectionChange)
                and not await shown(change.charger_id)
            ):
                continue
            tag = type(change).__struct_config__.tag
            yield b"event: %s\ndata: %s\n\n" % (str(tag).encode(), msgspec.json.encode(change))


class MessageController(Controller):
    path = "/api/v1/chargers/{charger_id:str}/messages"
    tags = ["chargers"]

    @get("/", summary="The charger's last OCPP messages both ways (in memory, never stored)")
    async def messages(self, ctx: Ctx, charger_id: FromPath[str]) -> RecentMessages:
        fleet = _fleet(ctx)
        await ctx.chargers.get(charger_id)  # 404 for an unknown charger
        held_by = None
        if ctx.gateway is not None and ctx.gateway.connection(charger_id) is None:
            elsewhere = await ctx.gateway.locate(charger_id)
            held_by = elsewhere.held_by if elsewhere is not None else None
        return RecentMessages(
            charger_id=charger_id,
            messages=[] if held_by else fleet.recent_messages(charger_id) or [],
            held_by=held_by,
        )


#: The controllers ``app.py`` passes to ``create_api``.
FLEET_ROUTES = [FleetController, LiveController, MessageController]
