"""Row-level security confines a sub-operator's queries to its rows (migration 0020).

These are the database's guarantees; the API's (every route, every token) are tested in
tests/api/test_tenancy.py.
"""

from __future__ import annotations

import asyncio
from datetime import date

import asyncpg
import pytest

from evgate.handlers.commands import AuthorizationKeys
from evgate.storage.chargers import ChargerStore
from evgate.storage.db import Database, acting_for, tenant
from evgate.storage.maintenance import Maintenance

pytestmark = pytest.mark.asyncio


async def _two_tenants(db: Database) -> tuple[int, int]:
    a = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('A') RETURNING id")
    b = await db.fetchval("INSERT INTO sub_operators (name) VALUES ('B') RETURNING id")
    for charger, owner in (("CP-A", a), ("CP-B", b), ("CP-OP", None)):
        await db.execute(
            "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ($1, $2, $3)",
            charger,
            bytes(32),
            owner,
        )
        await db.execute(
            "INSERT INTO transactions"
            " (charger_id, connector_id, id_tag, id_tag_status, meter_start, started_at)"
            " VALUES ($1, 1, 'T', 'Accepted', 0, now())",
            charger,
        )
    return a, b


async def test_every_table_is_closed_to_tenants_unless_a_policy_opens_it(db: Database) -> None:
    """A table without row-level security would show a tenant every row: none may exist,
    including those later migrations add (they must enable it and write their policy), and
    the meter_values partitions (read through the parent; a partition named directly shows a
    tenant nothing)."""
    open_tables = await db.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        " AND relkind IN ('r', 'p') AND NOT relrowsecurity"
        " AND relname <> 'schema_migrations'"
    )
    assert [r["relname"] for r in open_tables] == []


async def test_a_tenant_sees_only_its_rows(db: Database) -> None:
    a, b = await _two_tenants(db)
    with acting_for(a):
        assert tenant() == a
        assert [r["id"] for r in await db.fetch("SELECT id FROM chargers")] == ["CP-A"]
        assert [r["charger_id"] for r in await db.fetch("SELECT charger_id FROM transactions")] == [
            "CP-A"
        ]
        # Another tenant's row is absent, not forbidden: an update finds nothing.
        assert await db.execute("UPDATE chargers SET description = 'x' WHERE id = 'CP-B'") == (
            "UPDATE 0"
        )
        assert await db.execute("DELETE FROM transactions WHERE charger_id = 'CP-OP'") == (
            "DELETE 0"
        )
        # The users domain has no tenant policy: nothing.
        assert await db.fetchval("SELECT count(*) FROM users") == 0
        assert [r["id"] for r in await db.fetch("SELECT id FROM sub_operators")] == [a]
    with acting_for(b):
        assert [r["id"] for r in await db.fetch("SELECT id FROM chargers")] == ["CP-B"]
    assert tenant() is None
    assert await db.fetchval("SELECT count(*) FROM chargers") == 3


async def test_what_a_tenant_creates_is_its_own_and_cannot_be_given_away(db: Database) -> None:
    a, b = await _two_tenants(db)
    with acting_for(a):
        await db.execute("INSERT INTO chargers (id, secret_digest) VALUES ('CP-A2', $1)", bytes(32))
        with pytest.raises(Exception, match="row-level security"):
            await db.execute("UPDATE chargers SET sub_operator_id = $1 WHERE id = 'CP-A2'", b)
        with pytest.raises(Exception, match="row-level security"):
            await db.execute(
                "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ('CP-X', $1, $2)",
                bytes(32),
                b,
            )
    assert await db.fetchval("SELECT sub_operator_id FROM chargers WHERE id = 'CP-A2'") == a


async def test_the_tenant_of_a_pooled_connection_is_the_acquirers(db: Database) -> None:
    """One pooled connection serves tenants one after another, and tasks at once: each query
    sees the tenant of the context that acquired it, never the previous one's."""
    a, b = await _two_tenants(db)

    async def charger_ids(owner: int) -> list[str]:
        with acting_for(owner):
            return [r["id"] for r in await db.fetch("SELECT id FROM chargers")]

    for _ in range(3):
        results = await asyncio.gather(*(charger_ids(o) for o in (a, b, a, b, a, b)))
        assert results == [["CP-A"], ["CP-B"]] * 3
    # The operator's pool is untouched by the tenant role.
    assert await db.fetchval("SELECT current_user = session_user") is True


async def test_a_tenant_references_only_rows_it_sees(db: Database) -> None:
    """PostgreSQL checks a foreign key past row-level security: migration 0023's triggers
    make another tenant's row what an absent one is (the same foreign_key_violation, naming
    the same constraint). Every foreign key of a table a tenant owns rows of has one, those
    of later migrations too (their policies check references to chargers and sub-operators)."""
    a, b = await _two_tenants(db)
    theirs = await db.fetchval(
        "INSERT INTO installations (name, sub_operator_id) VALUES ('I-B', $1) RETURNING id", b
    )
    with acting_for(a):
        mine = await db.fetchval("INSERT INTO installations (name) VALUES ('I-A') RETURNING id")
        update = "UPDATE chargers SET installation_id = $1 WHERE id = 'CP-A'"
        for absent in (theirs, 999_999):
            with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
                await db.execute(update, absent)
            assert refused.value.constraint_name == "chargers_installation_id_fkey"
        assert await db.execute(update, mine) == "UPDATE 1"
    # The operator is not a tenant: it may put any charger anywhere.
    assert await db.execute("UPDATE chargers SET installation_id = $1 WHERE id = 'CP-A'", theirs)
    unguarded = await db.fetch(
        "SELECT c.conname FROM pg_constraint c"
        " JOIN pg_attribute s ON s.attrelid = c.conrelid AND s.attname = 'sub_operator_id'"
        " WHERE c.contype = 'f' AND c.confrelid NOT IN ('sub_operators'::regclass,"
        " 'chargers'::regclass)"
        " AND c.connamespace = current_schema()::regnamespace"
        " AND NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.conrelid"
        " AND t.tgname = left('tenant_' || c.conname, 63))"
    )
    assert [r["conname"] for r in unguarded] == []


async def test_the_tenant_role_is_this_databases_own(db: Database) -> None:
    """Roles belong to the cluster: a shared one would let another database's owner act as a
    tenant here. The tenant pool's connections are this database's role, which no other
    role but the owner's is a member of."""
    role = await db.fetchval("SELECT evgate_tenant_role()")
    assert role.startswith("evgate_tenant_") and role != "evgate_tenant_"
    a, _ = await _two_tenants(db)
    with acting_for(a):
        assert await db.fetchval("SELECT current_user") == role
    members = await db.fetch(
        "SELECT m.rolname FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member"
        " WHERE am.roleid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        role,
    )
    assert [r["rolname"] for r in members] == [await db.fetchval("SELECT session_user")]


async def test_a_new_meter_partition_is_closed_to_tenants(db: Database) -> None:
    """The maintenance task's daily partitions get row-level security as they are made."""
    await Maintenance(db, retention_days=0).run_once(date(2031, 1, 1))
    closed = await db.fetch(
        "SELECT relname, relrowsecurity FROM pg_class WHERE relname LIKE 'meter_values_p2031%'"
        " AND relkind = 'r'"
    )
    assert closed and all(r["relrowsecurity"] for r in closed), closed


async def test_a_component_task_a_tenants_request_starts_acts_for_no_tenant(db: Database) -> None:
    """Review of issue 20: the AuthorizationKeys saver, started lazily by whichever call
    accepts the first key, inherited a tenant's request's context and stored no other
    charger's key ever after ("deleted"), though that charger now uses it. A component's task
    is a ``service_task``, with a context of its own."""
    a, _ = await _two_tenants(db)
    keys = AuthorizationKeys(ChargerStore(db).set_secret_digest, wait=10)
    try:
        with acting_for(a):
            # A's own request starts the saver, while the operator's charger's key waits too.
            await asyncio.gather(
                keys.accepted("CP-A", b"a" * 32), keys.accepted("CP-OP", b"o" * 32)
            )
        stored = await db.fetch("SELECT id, secret_digest FROM chargers ORDER BY id")
        assert {r["id"]: r["secret_digest"] for r in stored} == {
            "CP-A": b"a" * 32,
            "CP-B": bytes(32),
            "CP-OP": b"o" * 32,
        }
    finally:
        await keys.stop()


async def test_a_tenants_subscription_moves_the_wanted_generation_it_cannot_touch(
    db: Database,
) -> None:
    """The writer's names of wanted events are as fresh as the subscriptions' generation
    (migration 0027): a sub-operator's subscription moves it too (the trigger runs as the
    owner; as the tenant it would have updated no row, and the writer would have kept
    filtering the new subscription's events out), while the tenant can neither read nor move
    the generation itself."""
    a, _ = await _two_tenants(db)
    before = await db.fetchval("SELECT generation FROM outbox_wanted")
    with acting_for(a):
        await db.execute(
            "INSERT INTO subscriptions (via, notifications, callback_url, webhook_secret)"
            " VALUES ('webhook', '{x}', 'http://127.0.0.1:9/', '\\x00')"
        )
        assert await db.fetchval("SELECT count(*) FROM outbox_wanted") == 0
        assert await db.execute("UPDATE outbox_wanted SET generation = 0") == "UPDATE 0"
    assert await db.fetchval("SELECT generation FROM outbox_wanted") == before + 1
