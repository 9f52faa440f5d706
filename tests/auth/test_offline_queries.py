"""What a boot costs the database for the offline-charging configuration (issue 23): a charger
in no installation that never left one reads nothing; one that left an installation while it
was offline reads its row once and gets the change. Counted by PostgreSQL itself
(``pg_stat_statements``, on a server of this module's own)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from evgate.storage.db import apply_migrations
from evgate.storage.embedded import EmbeddedPostgres
from support import until
from support.database import create_database, drop_database

from .auth_helpers import Site, StartSite, connected
from .test_real_chargers import OFFLINE_OFF

# The store's read of one charger's row (InstallationStore.offline_config).
_READ = "%FROM charger_offline_config WHERE charger_id = $1%"


_TEMPLATE = "offline_queries_template"


@pytest.fixture(scope="module")
def counting_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL of this module's own with ``pg_stat_statements`` loaded (a library loaded
    at the server's start), and the DSN of its server; each test's database is a copy of a
    migrated template with the extension."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("counting-pg"))
    server.start()
    server.stop()
    with (server.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
    dsn = server.start()

    async def prepare() -> None:
        conn = await asyncpg.connect(await create_database(dsn, _TEMPLATE))
        try:
            await apply_migrations(conn)
            await conn.execute("CREATE EXTENSION pg_stat_statements")
        finally:
            await conn.close()

    asyncio.run(prepare())
    try:
        yield dsn
    finally:
        server.stop("immediate")


@pytest.fixture
async def database_url(counting_pg: str) -> AsyncIterator[str]:
    """The sites of this module run on the counting server, each test on a fresh database."""
    name = f"offline_{uuid.uuid4().hex[:12]}"
    yield await create_database(counting_pg, name, _TEMPLATE)
    await drop_database(counting_pg, name)


async def _reads(site: Site) -> int:
    assert site.app.db is not None
    return int(
        await site.app.db.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE $1"
            " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            _READ,
        )
    )


async def test_a_boot_in_no_installation_reads_no_offline_configuration(site: Site) -> None:
    """Two chargers in no installation boot: the one that never was in one costs no read of
    the offline configuration; the one that left an installation while offline reads its row
    (once) and is sent offline charging off."""
    installation = await site.installation(allowChargingWhenOffline=True)
    never = await site.charger("CP-NEVER")
    left = await site.charger("CP-LEFT", installation["id"])
    await site.join("CP-LEFT", None)  # while it is offline: pushed at its next boot
    assert site.app.db is not None
    await site.app.db.execute("SELECT pg_stat_statements_reset()")
    async with connected(site.ws_url("CP-NEVER", never), "CP-NEVER") as charger:
        assert await charger.boot() == "Accepted"
        async with connected(site.ws_url("CP-LEFT", left), "CP-LEFT") as leaver:
            assert await leaver.boot() == "Accepted"
            await until(lambda: leaver.configuration == OFFLINE_OFF)

            async def read_once() -> bool:
                return await _reads(site) >= 1

            await until(read_once, within=5, message="the left charger's row was never read")
        assert charger.configuration == {}  # nothing pushed to the one that never was in one
    assert await _reads(site) == 1


async def test_a_change_left_pending_before_a_restart_is_pushed_at_the_next_boot(
    start_site: StartSite,
) -> None:
    """A charger left its installation while offline and evgate restarted since: the new
    process learns from the database (not from a notification it never saw) that the
    charger's change is pending, and pushes it when the charger boots."""
    async with start_site() as site:
        installation = await site.installation(allowChargingWhenOffline=True)
        secret = await site.charger("CP-LEFT", installation["id"])
        await site.join("CP-LEFT", None)
    async with start_site() as again, connected(again.ws_url("CP-LEFT", secret), "CP-LEFT") as c:
        assert await c.boot() == "Accepted"
        await until(lambda: c.configuration == OFFLINE_OFF)
