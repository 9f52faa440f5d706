"""storage room: the outbox, for changes made outside the group-commit writer — an event is a
row written in the transaction of the state it describes, on that transaction's connection
(the API's changes to chargers, id tags, reservations, users and what they pay; the
cluster's reaps). The writer's own outbox rows are ``storage/ops/outbox.py``'s (EMIT); the
dispatcher reads the outbox (``storage/deliveries.py``).

An event about a sub-operator's resource that is not a charger (a location, a tariff, a
circuit, an id tag) is stamped with the resource's ``sub_operator_id`` in its INSERT
(:class:`About`), so that the tenant's subscriptions get it whoever made the change (the
operator too); a charger's events reach them through the charger at fan-out. A deletion's
event is recorded while the row is still there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

if TYPE_CHECKING:
    from evgate.storage.balances import BalanceEntry
    from evgate.storage.locations import Location
    from evgate.storage.tariffs import StoredTariff
    from evgate.storage.users import User

__all__ = [
    "About",
    "insert_outbox",
    "record_charger_changed",
    "record_id_tag_changed",
    "record_location_changed",
    "record_reservation_changed",
    "record_tariff_changed",
    "record_user_balance_changed",
    "record_user_changed",
]


# Per kind of resource: the key an event names it by (an id tag's events: its ``number``)
# and the column that says whose it is (a sub-operator's events: its own id).
_KEYS = {
    "chargers": ("id", "sub_operator_id"),
    "locations": ("id", "sub_operator_id"),
    "tariffs": ("id", "sub_operator_id"),
    "circuits": ("id", "sub_operator_id"),
    "id_tags": ("number", "sub_operator_id"),
    "sub_operators": ("id", "id"),
}


@dataclass(frozen=True)
class About:
    """The resource a change's events are about, whose sub-operator they are stamped with."""

    table: Literal["chargers", "locations", "tariffs", "circuits", "id_tags", "sub_operators"]
    key: int | str


async def record_charger_changed(conn: asyncpg.Connection, charger_id: str, action: str) -> None:
    """Append chargePoint.changed and ChargePointChangedNotification for a charger, on ``conn``
    inside the transaction that changes it (before the DELETE, for ``deleted``)."""
    from evgate.events.builders import ChargerFacts, charger_changed  # events builds, we store

    row = await conn.fetchrow(
        "SELECT id, number, description, security_profile, registration_status,"
        " network_status, created_at, updated_at FROM chargers WHERE id = $1",
        charger_id,
    )
    if row is not None:
        facts = ChargerFacts(**dict(row))
        # Stamped too: a tenant's subscriptions get its charger's deletion, made by the
        # operator, though the charger is gone when the event fans out.
        entries = charger_changed(facts, action, datetime.now(UTC))  # type: ignore[arg-type]
        await insert_outbox(conn, entries, About("chargers", charger_id))


async def record_id_tag_changed(conn: asyncpg.Connection, number: int, action: str) -> None:
    """Append idTag.changed for the id tag ``number``, on ``conn`` inside the transaction that
    changes it (before the DELETE, for ``deleted``)."""
    from evgate.events.builders import id_tag_changed

    entry = id_tag_changed(number, action, datetime.now(UTC))  # type: ignore[arg-type]
    await insert_outbox(conn, [entry], About("id_tags", number))


async def record_reservation_changed(
    conn: asyncpg.Connection, reservations: Iterable[tuple[str, int]], status: str
) -> None:
    """Append reservation.changed ``status`` for each (charger id, reservation id), on
    ``conn`` inside the transaction that changes them."""
    from evgate.events.builders import reservation_changed

    at = datetime.now(UTC)
    await insert_outbox(
        conn,
        [reservation_changed(c, r, status, at) for c, r in reservations],  # type: ignore[arg-type]
    )


async def record_location_changed(
    conn: asyncpg.Connection, location: Location, charger_numbers: list[int], action: str
) -> None:
    """Append LocationChangedNotification, on ``conn`` inside the transaction that changes the
    location (before the DELETE, for ``deleted``)."""
    from evgate.events.builders import location_changed

    at = datetime.now(UTC)
    entry = location_changed(location, charger_numbers, action, at)  # type: ignore[arg-type]
    await insert_outbox(conn, [entry], About("locations", location.id))


async def record_tariff_changed(
    conn: asyncpg.Connection, tariff: StoredTariff, action: str
) -> None:
    """Append TariffChangedNotification, on ``conn`` inside the transaction that changes the
    tariff (before the DELETE, for ``deleted``)."""
    from evgate.events.builders import tariff_changed

    at = datetime.now(UTC)
    entry = tariff_changed(tariff.id, tariff, tariff.updated_at, action, at)  # type: ignore[arg-type]
    await insert_outbox(conn, [entry], About("tariffs", tariff.id))


async def record_user_changed(conn: asyncpg.Connection, user: User, action: str) -> None:
    """Append UserChangedNotification for ``user`` (as it is now, or was before a delete), on
    ``conn`` inside the transaction that changes it."""
    from evgate.events.builders import user_changed

    await insert_outbox(conn, [user_changed(user, action, datetime.now(UTC))])  # type: ignore[arg-type]


async def record_user_balance_changed(conn: asyncpg.Connection, entry: BalanceEntry) -> None:
    """Append userBalance.changed for a booked ``entry``, on ``conn`` inside its
    transaction."""
    from evgate.events.builders import user_balance_changed

    await insert_outbox(conn, [user_balance_changed(entry, datetime.now(UTC))])


async def insert_outbox(
    conn: asyncpg.Connection, entries: Iterable[Sequence[Any]], about: About | None = None
) -> None:
    """Append outbox rows ``(event, charger_id, payload)`` on ``conn``, inside the caller's
    transaction (the one that makes the change the events describe). ``about``: the
    sub-operator's resource they are about, whose ``sub_operator_id`` they are stamped with
    (read in the same statement); without it, or for a resource of the operator's, the
    stamp is the column's default, the tenant a request acts for (none: the operator's).
    """
    rows = list(entries)
    if not rows:
        return
    if about is None:
        await conn.executemany(
            "INSERT INTO outbox (event, charger_id, payload) VALUES ($1, $2, $3)", rows
        )
        return
    key, owner = _KEYS[about.table]
    await conn.executemany(
        "INSERT INTO outbox (event, charger_id, payload, sub_operator_id) VALUES ($1, $2, $3,"
        f" coalesce((SELECT {owner} FROM {about.table} WHERE {key} = $4), evgate_tenant()))",
        [(*row, about.key) for row in rows],
    )
