"""The session-end hook: a committed stop is reported to the installation's provider, with
retries until a 2xx, across restarts of evgate, once per stop.

The stops are written to ``transactions`` as the StopTransaction handler's writer does (an
UPDATE setting ``stopped_at`` in its batch); the outbox row comes from the trigger in the same
transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from support import until

from .auth_helpers import Provider, Site, StartSite, webhook

STARTED = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)
STOPPED = datetime(2025, 5, 1, 9, 30, 15, 250000, tzinfo=UTC)


async def _start(
    site: Site, charger_id: str = "CP-1", session_id: str | None = "S-9", meter_start: int = 1000
) -> int:
    assert site.app.db is not None
    transaction_id: int = await site.app.db.fetchval(
        "INSERT INTO transactions (charger_id, connector_id, id_tag, id_tag_status, meter_start,"
        " started_at, external_session_id) VALUES ($1, 2, 'TAG-1', 'Accepted', $4, $2, $3)"
        " RETURNING id",
        charger_id,
        STARTED,
        session_id,
        meter_start,
    )
    return transaction_id


async def _stop(site: Site, transaction_id: int, meter_stop: int = 13_500) -> None:
    assert site.app.db is not None
    await site.app.db.execute(
        "UPDATE transactions SET stopped_at = $2, meter_stop = $3, stop_reason = 'EVDisconnected'"
        " WHERE id = $1",
        transaction_id,
        STOPPED,
        meter_stop,
    )


async def _outbox(site: Site) -> list[Any]:
    assert site.app.db is not None
    return await site.app.db.fetch("SELECT * FROM auth_session_ends ORDER BY id")


async def _webhook_site(site: Site, provider: Provider, **settings: Any) -> int:
    installation = await site.installation(
        authorizationMode="webhook", webhook=webhook(provider, **settings)
    )
    await site.charger("CP-1", installation["id"])
    return int(installation["id"])


async def test_a_stop_is_reported_with_the_documented_body(site: Site, provider: Provider) -> None:
    """After the stop commits, the provider gets the end with its sessionId, times, meter
    readings, energy and reason (authenticated like the start hook); the row is then gone."""
    installation_id = await _webhook_site(site, provider)
    transaction_id = await _start(site)
    await _stop(site, transaction_id)
    await until(lambda: provider.requests("/end"))
    [end] = provider.requests("/end")
    assert end.json() == {
        "chargerId": "CP-1",
        "connectorId": 2,
        "idTag": "TAG-1",
        "installationId": installation_id,
        "sessionId": "S-9",
        "transactionId": transaction_id,
        "startedAt": "2025-05-01T08:00:00.000000Z",
        "stoppedAt": "2025-05-01T09:30:15.250000Z",
        "meterStart": 1000,
        "meterStop": 13_500,
        "energyWh": 12_500,
        "reason": "EVDisconnected",
    }
    assert end.headers["authorization"] == "Bearer tok-1"
    assert end.headers["content-type"] == "application/json"
    assert await _wait_empty(site)


async def _wait_empty(site: Site) -> bool:
    """Whether the outbox empties within a few seconds."""

    async def empty() -> bool:
        return not await _outbox(site)

    return bool(await until(empty, within=5))


async def test_an_open_transaction_is_not_reported(site: Site, provider: Provider) -> None:
    """Only a stop enters the outbox, not a start."""
    await _webhook_site(site, provider)
    await _start(site)
    assert not await _outbox(site)


async def test_a_resent_stop_is_reported_once(site: Site, provider: Provider) -> None:
    """Writing the stop again (a charger resending StopTransaction) adds nothing."""
    await _webhook_site(site, provider)
    transaction_id = await _start(site)
    await _stop(site, transaction_id)
    await _stop(site, transaction_id, meter_stop=14_000)
    await until(lambda: provider.requests("/end"))
    assert await _wait_empty(site)
    assert len(provider.requests("/end")) == 1


async def test_a_transaction_written_already_stopped_is_reported(
    site: Site, provider: Provider
) -> None:
    """A transaction inserted with its stop (a charger that was offline) is reported too,
    without a sessionId when the provider never gave one."""
    await _webhook_site(site, provider)
    assert site.app.db is not None
    await site.app.db.execute(
        "INSERT INTO transactions (charger_id, connector_id, id_tag, id_tag_status, meter_start,"
        " started_at, stopped_at, meter_stop) VALUES ('CP-1', 1, 'T', 'Accepted', 0, $1, $2, 50)",
        STARTED,
        STOPPED,
    )
    await until(lambda: provider.requests("/end"))
    body = provider.requests("/end")[0].json()
    assert body["sessionId"] is None and body["reason"] is None and body["energyWh"] == 50


async def test_stops_outside_reporting_installations_are_not_queued(
    site: Site, provider: Provider
) -> None:
    """Chargers in no installation, in native mode, or in webhook mode without an end URL
    leave nothing in the outbox."""
    native = await site.installation(authorizationMode="native")
    start_only = await site.installation(
        authorizationMode="webhook", webhook=webhook(provider, sessionEndUrl=None)
    )
    await site.charger("LONE")
    await site.charger("NATIVE", native["id"])
    await site.charger("START-ONLY", start_only["id"])
    for charger_id in ("LONE", "NATIVE", "START-ONLY"):
        await _stop(site, await _start(site, charger_id))
    assert not await _outbox(site)


async def test_failed_deliveries_are_retried_until_a_2xx(site: Site, provider: Provider) -> None:
    """500, 503, 404: each is retried (with backoff), and the end is delivered on the 200;
    meanwhile the API lists it with its attempts and last error."""
    installation_id = await _webhook_site(site, provider)
    provider.end_statuses = [500, 503, 404]
    await _stop(site, await _start(site))
    await until(lambda: len(provider.requests("/end")) >= 2)
    r = await site.api.get(f"/api/v1/installations/{installation_id}/session-ends")
    pending = r.json()["data"]
    if pending:  # unless the last attempts already went through
        assert pending[0]["attempts"] >= 1 and "HTTP" in pending[0]["lastError"]
        assert pending[0]["payload"]["sessionId"] == "S-9"
    await until(lambda: len(provider.requests("/end")) == 4)
    assert await _wait_empty(site)
    bodies = {e.body for e in provider.requests("/end")}
    assert len(bodies) == 1  # the same end, each time


async def test_undelivered_ends_survive_a_restart(
    start_site: StartSite, provider: Provider
) -> None:
    """An end the provider refused while evgate ran is delivered by the next evgate on the
    same database."""
    provider.end_statuses = [503] * 10_000
    async with start_site() as site:
        await _webhook_site(site, provider)
        await _stop(site, await _start(site))
        await until(lambda: len(provider.requests("/end")) >= 2)
    refused = len(provider.requests("/end"))
    provider.end_statuses = []
    async with start_site() as site:
        await until(lambda: len(provider.requests("/end")) > refused)
        assert await _wait_empty(site)
        assert provider.requests("/end")[-1].json()["sessionId"] == "S-9"


async def test_two_processes_deliver_each_end_once(
    start_site: StartSite, provider: Provider
) -> None:
    """Two evgate processes on one database share the outbox: every end reaches the provider
    exactly once (claims are leased)."""
    async with start_site() as first, start_site() as second:
        await _webhook_site(first, provider)
        ids = [await _start(first, meter_start=n) for n in range(30)]
        for transaction_id in ids:
            await _stop(second, transaction_id)
        await until(lambda: len(provider.requests("/end")) >= 30)
        assert await _wait_empty(first)
    delivered = [e.json()["transactionId"] for e in provider.requests("/end")]
    assert sorted(delivered) == sorted(ids)


async def test_ends_of_a_deleted_installation_are_dropped(site: Site, provider: Provider) -> None:
    """When the installation is gone, nobody can receive its ends: they are dropped (and
    logged) instead of retried for ever."""
    installation_id = await _webhook_site(site, provider)
    provider.end_statuses = [503] * 10_000
    await _stop(site, await _start(site))
    await until(lambda: provider.requests("/end"))
    await site.join("CP-1", None)
    assert (await site.api.delete(f"/api/v1/installations/{installation_id}")).status_code == 204
    assert await _wait_empty(site)  # the next attempt finds no installation
