"""storage room: charger ownership across processes and commands routed between them.

One channel, ``evgate_cluster``, carries three kinds of notification, each a line of words:

* ``owner <instance> <charger> ...`` — these chargers are now held by ``instance``; another
  process holding one of them closes its connection (the charger moved);
* ``call <target> <id>`` — remote call ``id`` waits for ``target`` to run it;
* ``reply <origin> <id>`` — remote call ``id`` has its outcome, for ``origin``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg
import msgspec

from evgate.storage.db import Database

__all__ = ["CLUSTER_CHANNEL", "ClusterStore", "Holder", "OwnerClaim"]

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
    """Queries on the cluster tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        this process must claim its chargers again)."""
        status = await self.db.execute(
            "UPDATE cluster_instances SET lease_until = now() + make_interval(secs => $2)"
            " WHERE instance = $1",
            instance,
            lease,
        )
        return status != "UPDATE 0"

    async def deregister(self, instance: str) -> None:
        """A clean goodbye: the instance and every charger it held go at once."""
        await self.db.execute("DELETE FROM cluster_instances WHERE instance = $1", instance)

    async def reap(self, grace: float) -> int:
        """Remove instances whose lease ran out ``grace`` seconds ago (their owner rows go
        too) and remote calls nobody will read. Returns the number of instances removed."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM cluster_instances"
                " WHERE lease_until < now() - make_interval(secs => $1)",
                grace,
            )
            await conn.execute(
                "DELETE FROM remote_calls WHERE created_at < now() - interval '10 minutes'"
            )
        return int(status.split()[-1])

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
