"""What a boot costs the database for the offline-charging configuration (issue 23): a charger
in no installation that never left one reads nothing; one that left an installation while it
was offline reads its row once and gets the change. Counted by PostgreSQL itself
(``pg_stat_statements``, on a server of this module's own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from evgate.storage.db import apply_migrations
from evgate.storage.embedded import EmbeddedPostgres
from support import until

from .auth_helpers import Site, connected
from .test_real_chargers import OFFLINE_OFF

# The store's read of one charger's row (InstallationStore.offline_config).
_READ = "%FROM charger_offline_config WHERE charger_id = $1%"


@pytest.fixture(scope="module")
def counting_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL of this module's own with ``pg_stat_statements`` loaded (a library loaded
    at the server's start), and the DSN of its migrated database."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("counting-pg"))
    server.start()
    server.stop()
    with (server.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
    dsn = server.start()

    async def prepare() -> None:
        conn = await asyncpg.connect(dsn)
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
    """The sites of this module run on the counting server."""
    yield counting_pg


async def _reads(site: Site) -> int:
    assert site.app.db is not None
    return int(
        await site.app.db.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE $1", _READ
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
