"""storage room: charger ownership across processes and commands routed between them.

One channel, ``evgate_cluster``, carries three kinds of notification, each a line of words:

* ``owner <instance> <charger> ...`` — these chargers are now held by ``instance``; another
  process holding one of them closes its connection (the charger moved);
* ``call <target> <id>`` — remote call ``id`` waits for ``target`` to run it;
* ``reply <origin> <id>`` — remote call ``id`` has its outcome, for ``origin``.

A process killed without a goodbye emits no disconnects: :meth:`ClusterStore.reap` sets the
network status of the chargers it still owned, with their events, in the reaping transaction
(so two reapers cannot both emit them, and a crash of the reaper loses none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.outbox import insert_outbox

__all__ = ["CLUSTER_CHANNEL", "ClusterStore", "Holder", "NetworkEvent", "OwnerClaim", "Reaped"]

CLUSTER_CHANNEL = "evgate_cluster"
_NOTIFY_BYTES = 7000  # under PostgreSQL's 8000-byte NOTIFY payload limit


class OwnerClaim(msgspec.Struct, frozen=True):
    """A connection this process holds, as written to ``charger_owners``."""

    charger_id: str
    connected_at: datetime
    remote_address: str
    security_profile: int


class Holder(OwnerClaim, frozen=True):
    """Where a charger is connected: an owner row whose instance's lease is live."""

    instance: str


class Reaped(msgspec.Struct, frozen=True):
    """What a reap removed: the expired instances, and the chargers they held that were set
    ``temporarily unavailable`` (each with its NetworkStatusNotification)."""

    instances: list[str]
    unavailable: list[str]


#: The outbox row ``(event, charger_id, payload)`` of a charger's NetworkStatusNotification:
#: ``(charger_id, number, connected, at)`` -> the row. The events room builds it (wired by the
#: app); storage only stores it, in the transaction that changes the status.
NetworkEvent = Callable[[str, int, bool, datetime], Sequence[Any]]

# Set chargers temporarily unavailable as of the last moment they were known connected (an
# older change never overwrites a newer one, as NETWORK_STATUS); a charger not available
# emits nothing.
_SET_UNAVAILABLE = """
UPDATE chargers c SET network_status = 'temporarily unavailable', network_status_at = u.at
FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
WHERE c.id = u.id AND c.network_status = 'available'
  AND (c.network_status_at IS NULL OR c.network_status_at <= u.at)
RETURNING c.id, c.number, u.at
"""

# Set available again the reaped chargers that the instance holds ($1) with the connection it
# claimed ($2, $3), as of the reaped status's own time + 1 microsecond, not of now: a
# disconnect of that connection written later (its time is later) then wins. A status set at
# or after $4 (when the process saw the connection alive) is a disconnect's, not the reap's,
# and stays.
_RESTORE = """
WITH held AS (
    SELECT o.charger_id FROM charger_owners o
    JOIN unnest($2::text[], $3::timestamptz[]) AS u(id, connected_at)
        ON o.charger_id = u.id AND o.connected_at = u.connected_at
    WHERE o.instance = $1 ORDER BY o.charger_id FOR UPDATE OF o
)
UPDATE chargers c SET network_status = 'available',
    network_status_at = c.network_status_at + interval '1 microsecond'
FROM held
WHERE c.id = held.charger_id AND c.network_status = 'temporarily unavailable'
  AND c.network_status_at < $4
RETURNING c.id, c.number, c.network_status_at AS at
"""


def _chunks(prefix: str, words: Iterable[str]) -> list[str]:
    """Notification payloads ``prefix word word ...``, each under the payload limit."""
    payloads: list[str] = []
    current = prefix
    for word in words:
        if len(current) + 1 + len(word) > _NOTIFY_BYTES:
            payloads.append(current)
            current = prefix
        current += " " + word
    if current != prefix:
        payloads.append(current)
    return payloads


class ClusterStore:
    """Queries on the cluster tables.

    Args:
        db: the database.
        network_event: builds the NetworkStatusNotification of a charger whose status a reap
            or a restore changes (``evgate.events.builders``, wired by the app).
    """

    def __init__(self, db: Database, network_event: NetworkEvent) -> None:
        self.db = db
        self._network_event = network_event

    async def _network_changed(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], connected: bool
    ) -> list[str]:
        """Emit the events of the status changes ``rows`` (id, number, at), inside the
        caller's transaction; returns their chargers."""
        await insert_outbox(
            conn, [self._network_event(r["id"], r["number"], connected, r["at"]) for r in rows]
        )
        return [r["id"] for r in rows]

    async def register(
        self, instance: str, node_id: str, worker_index: int, pid: int, lease: float
    ) -> None:
        """Record this process, with a lease of ``lease`` seconds."""
        await self.db.execute(
            "INSERT INTO cluster_instances (instance, node_id, worker_index, pid, lease_until)"
            " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
            instance,
            node_id,
            worker_index,
            pid,
            lease,
        )

    async def renew(self, instance: str, lease: float) -> bool:
        """Extend the lease; False when the instance row is gone (it was expired and reaped:
        this process must claim its chargers again, and :meth:`restore` their status)."""
        status = await self.db.execute(
            "UPDATE cluster_instances SET lease_until = now() + make_interval(secs => $2),"
            " renewed_at = now() WHERE instance = $1",
            instance,
            lease,
        )
        return status != "UPDATE 0"

    async def deregister(self, instance: str) -> None:
        """A clean goodbye: the instance and every charger it held go at once."""
        await self.db.execute("DELETE FROM cluster_instances WHERE instance = $1", instance)

    async def reap(self, grace: float) -> Reaped:
        """Remove instances whose lease ran out ``grace`` seconds ago (their owner rows go
        too) and remote calls nobody will read.

        The chargers an expired instance still owned (a charger that reconnected elsewhere
        has been claimed by its new holder and is not among them) are set ``temporarily
        unavailable``, with their events, in the same transaction. Their time is the last
        moment they were known connected: the instance's last renewal, or their connect if
        later, so that a newer connection's ``available`` (written before or after) stands.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            # SKIP LOCKED: of two processes reaping at once, each instance goes to one.
            expired = await conn.fetch(
                "SELECT instance FROM cluster_instances"
                " WHERE lease_until < now() - make_interval(secs => $1)"
                " FOR UPDATE SKIP LOCKED",
                grace,
            )
            instances = [r["instance"] for r in expired]
            unavailable: list[str] = []
            if instances:
                # FOR UPDATE: a concurrent claim of one of these chargers by its new holder
                # either commits first (the row no longer names the instance: skipped) or
                # waits for this transaction (and then finds no owner row to displace).
                owned = await conn.fetch(
                    "SELECT o.charger_id, greatest(o.connected_at, i.renewed_at) AS at"
                    " FROM charger_owners o JOIN cluster_instances i USING (instance)"
                    " WHERE o.instance = ANY($1::text[]) ORDER BY o.charger_id FOR UPDATE OF o",
                    instances,
                )
                rows = await conn.fetch(
                    _SET_UNAVAILABLE, [r["charger_id"] for r in owned], [r["at"] for r in owned]
                )
                unavailable = await self._network_changed(conn, rows, connected=False)
                await conn.execute(
                    "DELETE FROM cluster_instances WHERE instance = ANY($1::text[])", instances
                )
            await conn.execute(
                "DELETE FROM remote_calls WHERE created_at < now() - interval '10 minutes'"
            )
        return Reaped(instances, unavailable)

    async def restore(
        self, instance: str, claims: Sequence[OwnerClaim], seen_alive: datetime
    ) -> list[str]:
        """Set available again the chargers that ``instance`` holds with these connections
        and that were set temporarily unavailable while its lease had run out (it was paused,
        or cut off from the database, not dead). Call after claiming them again, with
        ``seen_alive`` the moment the process last saw each of these connections open: a
        status set since is a disconnect's and stands. Each is set as of its reaped status's
        own time (+1 µs), so that a disconnect written after the restore wins too. Returns
        the chargers whose status changed (each with its event)."""
        if not claims:
            return []
        claims = sorted(claims, key=lambda c: c.charger_id)  # one lock order with the reap
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                _RESTORE,
                instance,
                [c.charger_id for c in claims],
                [c.connected_at for c in claims],
                seen_alive,
            )
            return await self._network_changed(conn, rows, connected=True)

    async def claim(self, instance: str, claims: Sequence[OwnerClaim]) -> list[str]:
        """Make ``instance`` the owner of these chargers, unless an owner has a newer
        connection. Tells the previous owners (``owner`` notification) in the same
        transaction.

        Returns:
            The chargers whose claim lost to a newer connection elsewhere: close them here.
        """
        if not claims:
            return []
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                WITH incoming AS (
                    SELECT * FROM unnest($2::text[], $3::timestamptz[], $4::text[],
                                         $5::smallint[])
                        AS t(charger_id, connected_at, remote_address, security_profile)
                ), previous AS (
                    SELECT o.charger_id, o.instance FROM charger_owners o
                    JOIN incoming USING (charger_id) FOR UPDATE OF o
                ), won AS (
                    INSERT INTO charger_owners AS o
                        (charger_id, instance, connected_at, remote_address, security_profile)
                    SELECT charger_id, $1, connected_at, remote_address, security_profile
                    FROM incoming
                    ON CONFLICT (charger_id) DO UPDATE SET
                        instance = EXCLUDED.instance, connected_at = EXCLUDED.connected_at,
                        remote_address = EXCLUDED.remote_address,
                        security_profile = EXCLUDED.security_profile
                    WHERE o.connected_at <= EXCLUDED.connected_at
                    RETURNING o.charger_id
                )
                SELECT i.charger_id,
                       i.charger_id IN (SELECT charger_id FROM won) AS won,
                       p.instance AS previous
                FROM incoming i LEFT JOIN previous p USING (charger_id)
                """,
                instance,
                [c.charger_id for c in claims],
                [c.connected_at for c in claims],
                [c.remote_address for c in claims],
                [c.security_profile for c in claims],
            )
            taken = [
                r["charger_id"] for r in rows if r["won"] and r["previous"] not in (None, instance)
            ]
            for payload in _chunks(f"owner {instance}", taken):
                await conn.execute("SELECT pg_notify($1, $2)", CLUSTER_CHANNEL, payload)
        return [r["charger_id"] for r in rows if not r["won"]]

    async def release(self, instance: str, charger_ids: Sequence[str]) -> None:
        """Give up these chargers, where ``instance`` still owns them."""
        if charger_ids:
            await self.db.execute(
                "DELETE FROM charger_owners WHERE instance = $1 AND charger_id = ANY($2::text[])",
                instance,
                list(charger_ids),
            )

    async def holder(self, charger_id: str) -> Holder | None:
        """Where the charger is connected, if its owner's lease is live."""
        row = await self.db.fetchrow(
            "SELECT o.instance, o.charger_id, o.connected_at, o.remote_address,"
            " o.security_profile FROM charger_owners o JOIN cluster_instances i USING (instance)"
            " WHERE o.charger_id = $1 AND i.lease_until > now()",
            charger_id,
        )
        if row is None:
            return None
        return Holder(**dict(row.items()))

    async def send_call(
        self, origin: str, target: str, charger_id: str, action: str, request: bytes
    ) -> int:
        """Queue a command for ``target`` and wake it; returns the call's id."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            call_id: int = await conn.fetchval(
                "INSERT INTO remote_calls (origin, target, charger_id, action, request)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
                origin,
                target,
                charger_id,
                action,
                request.decode(),
            )
            await conn.execute(
                "SELECT pg_notify($1, $2)", CLUSTER_CHANNEL, f"call {target} {call_id}"
            )
        return call_id

    async def take_call(self, call_id: int) -> asyncpg.Record | None:
        """The command to run: its charger, action and request (None if it was withdrawn)."""
        return await self.db.fetchrow(
            "SELECT origin, charger_id, action, request FROM remote_calls"
            " WHERE id = $1 AND outcome IS NULL",
            call_id,
        )

    async def answer_call(self, call_id: int, origin: str, outcome: bytes) -> None:
        """Store a command's outcome and wake its origin."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE remote_calls SET outcome = $2::jsonb WHERE id = $1",
                call_id,
                outcome.decode(),
            )
            await conn.execute(
                "SELECT pg_notify($1, $2)", CLUSTER_CHANNEL, f"reply {origin} {call_id}"
            )

    async def collect_outcome(self, call_id: int) -> bytes | None:
        """Read and delete a command's outcome (None if it has none yet)."""
        outcome = await self.db.fetchval(
            "DELETE FROM remote_calls WHERE id = $1 AND outcome IS NOT NULL RETURNING outcome",
            call_id,
        )
        return None if outcome is None else str(outcome).encode()

    async def withdraw(self, call_id: int) -> None:
        """Forget a command nobody waits for any more (its origin timed out)."""
        await self.db.execute("DELETE FROM remote_calls WHERE id = $1", call_id)
