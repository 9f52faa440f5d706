"""storage room: the writer's ops of ``chargers`` and ``charger_boot_info`` — what a charger
says of itself (BootNotification), its network status, and its GetDiagnostics request id.

* :func:`boot`: one row per charger, the latest BootNotification; the result is the
  registration status to answer.
* :func:`network_status`: the connect or disconnect a gateway observer saw; an older change
  never overwrites a newer one (two evgate processes' connect and disconnect of one charger).
* :func:`diagnostics_request` / :func:`diagnostics_requested`: the request id of the
  charger's latest accepted GetDiagnostics, read / drawn in the batch's transaction.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from evgate.storage.ops.base import FetchEach, Statement, Write, WriteOp, in_rounds

__all__ = [
    "BOOT_INFO",
    "DIAGNOSTICS_REQUEST",
    "DIAGNOSTICS_REQUESTED",
    "NETWORK_STATUS",
    "BootInfo",
    "NetworkStatus",
    "boot",
    "diagnostics_request",
    "diagnostics_requested",
    "network_status",
]

_BOOT_COLUMNS = (
    "charger_id",
    "vendor",
    "model",
    "charge_point_serial_number",
    "charge_box_serial_number",
    "firmware_version",
    "iccid",
    "imsi",
    "meter_type",
    "meter_serial_number",
    "booted_at",
)
_BOOT = f"""
INSERT INTO charger_boot_info AS b ({", ".join(_BOOT_COLUMNS)}, registration_status)
SELECT u.*, coalesce(c.registration_status, 'Rejected')
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::timestamptz[])
     AS u({", ".join(_BOOT_COLUMNS)})
LEFT JOIN chargers c ON c.id = u.charger_id
ON CONFLICT (charger_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in (*_BOOT_COLUMNS[1:], "registration_status"))}
RETURNING charger_id, registration_status
"""


class BootInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a BootNotification says of its charger (absent fields None), and when."""

    charger_id: str
    vendor: str
    model: str
    charge_point_serial_number: str | None
    charge_box_serial_number: str | None
    firmware_version: str | None
    iccid: str | None
    imsi: str | None
    meter_type: str | None
    meter_serial_number: str | None
    booted_at: datetime


class BootInfos(WriteOp[BootInfo, str]):
    """Stores a BootNotification and returns the registration status to answer, read in the same
    transaction: the operator's ``chargers.registration_status``, ``Rejected`` for a charger
    that is not (or no longer) registered."""

    name = "boot_info"

    async def write(self, conn: asyncpg.Connection, items: list[BootInfo]) -> list[str]:
        # One row per charger: its last boot.
        latest = list({item.charger_id: item for item in items}.values())
        rows = await conn.fetch(_BOOT, *([getattr(i, c) for i in latest] for c in _BOOT_COLUMNS))
        status = {r[0]: r[1] for r in rows}
        return [status[item.charger_id] for item in items]


BOOT_INFO = BootInfos()

_NETWORK = """
UPDATE chargers c SET network_status = u.status, network_status_at = u.at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(id, status, at)
WHERE c.id = u.id AND (c.network_status_at IS NULL OR c.network_status_at <= u.at)
RETURNING c.id
"""


class NetworkStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A charger's network status (``available``, ``temporarily unavailable``) as of ``at``."""

    charger_id: str
    status: str
    at: datetime


class NetworkStatuses(WriteOp[NetworkStatus, bool]):
    """Sets chargers' ``network_status`` (the NetworkStatusNotification they emit). Result:
    whether it was set — not for a deleted charger, nor for a change older than the stored
    one (two evgate processes' connect and disconnect of one charger apply in the order they
    happened, whatever order they commit in)."""

    name = "network_status"

    async def write(self, conn: asyncpg.Connection, items: list[NetworkStatus]) -> list[bool]:
        results = [False] * len(items)
        for indexes in in_rounds(items, lambda item: item.charger_id):
            round_items = [items[i] for i in indexes]
            rows = await conn.fetch(
                _NETWORK,
                [i.charger_id for i in round_items],
                [i.status for i in round_items],
                [i.at for i in round_items],
            )
            written = {r[0] for r in rows}
            for i in indexes:
                results[i] = items[i].charger_id in written
        return results


NETWORK_STATUS = NetworkStatuses()

#: Item: a charger id. Result: the request id of the charger's latest accepted GetDiagnostics
#: (None if evgate sent none), read in the transaction of the status notification.
DIAGNOSTICS_REQUEST: FetchEach[str, int | None] = FetchEach(
    "SELECT diagnostics_request_id FROM chargers WHERE id = $1",
    name="diagnostics_request",
    args=lambda charger_id: (charger_id,),
)

#: Item: a charger id: the charger answered a GetDiagnostics, which gets a request id.
DIAGNOSTICS_REQUESTED: Statement[str] = Statement(
    "UPDATE chargers SET diagnostics_request_id = nextval('command_request_ids') WHERE id = $1",
    name="diagnostics_requested",
    args=lambda charger_id: (charger_id,),
)


def boot(item: BootInfo) -> Write[str]:
    """Store a BootNotification; its result is the registration status to answer."""
    return BOOT_INFO(item)


def network_status(item: NetworkStatus) -> Write[bool]:
    """Set a charger's network status; its result says whether it was set (not for a deleted
    charger, nor for a change older than the stored one)."""
    return NETWORK_STATUS(item)


def diagnostics_request(charger_id: str) -> Write[int | None]:
    """Read the request id of the charger's latest accepted GetDiagnostics (None: none)."""
    return DIAGNOSTICS_REQUEST(charger_id)


def diagnostics_requested(charger_id: str) -> Write[None]:
    """The charger accepted a GetDiagnostics: draw it a new request id."""
    return DIAGNOSTICS_REQUESTED(charger_id)
