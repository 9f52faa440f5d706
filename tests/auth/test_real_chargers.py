"""External authorization with real chargers (the ``ocpp`` library over WebSockets) and a real
provider: Authorize, StartTransaction and StopTransaction through evgate's handlers, and the
offline-charging configuration pushed with ChangeConfiguration."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.v16 import call

from support import until

from .auth_helpers import Charger, Provider, Site, connected, webhook

OFFLINE_ON = {
    "LocalAuthorizeOffline": "true",
    "AllowOfflineTxForUnknownId": "true",
    "LocalPreAuthorize": "false",
}
OFFLINE_OFF = {
    "LocalAuthorizeOffline": "false",
    "AllowOfflineTxForUnknownId": "false",
    "LocalPreAuthorize": "false",
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _webhook_site(site: Site, provider: Provider, **settings: Any) -> tuple[int, str]:
    installation = await site.installation(
        authorizationMode="webhook", webhook=webhook(provider, **settings)
    )
    secret = await site.charger("CP-1", installation["id"])
    return int(installation["id"]), secret


async def _authorize(charger: Charger, id_tag: str = "TAG-1") -> str:
    response = await charger.call(call.Authorize(id_tag=id_tag))
    return str(response.id_tag_info["status"])


async def test_an_approved_session_from_authorize_to_the_end_hook(
    site: Site, provider: Provider
) -> None:
    """Authorize asks the provider; StartTransaction reuses that decision and keeps the
    provider's sessionId on the transaction; StopTransaction's end reaches the end hook."""
    installation_id, secret = await _webhook_site(site, provider)
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        assert await charger.boot() == "Accepted"
        assert await _authorize(charger) == "Accepted"
        start = await charger.call(
            call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=100, timestamp=_now())
        )
        assert start.id_tag_info["status"] == "Accepted"
        assert len(provider.requests("/start")) == 1
        assert site.app.db is not None
        stored = await site.app.db.fetchval(
            "SELECT external_session_id FROM transactions WHERE id = $1", start.transaction_id
        )
        assert stored == "S-1"
        await charger.call(
            call.StopTransaction(
                meter_stop=2100,
                timestamp=_now(),
                transaction_id=start.transaction_id,
                reason="Local",
            )
        )
        await until(lambda: provider.requests("/end"))
    end = provider.requests("/end")[0].json()
    assert end["sessionId"] == "S-1" and end["transactionId"] == start.transaction_id
    assert end["installationId"] == installation_id and end["energyWh"] == 2000
    assert end["reason"] == "Local" and end["connectorId"] == 1


async def test_a_refused_id_tag_is_blocked_at_the_charger(site: Site, provider: Provider) -> None:
    """The provider's refusal with reason "blocked" reaches the charger as Blocked."""
    _, secret = await _webhook_site(site, provider)
    provider.start_answer = lambda _: (
        200,
        json.dumps({"authorized": False, "reason": "card blocked"}).encode(),
    )
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        assert await _authorize(charger) == "Blocked"


async def test_a_stop_never_asks_the_providers_start_hook(site: Site, provider: Provider) -> None:
    """StopTransaction's idTag is answered without the session-start hook: the transaction's
    own id-tag Accepted, another one by the id-tag list; and the stop leaves no decision that
    a later StartTransaction would reuse (that start asks the provider again)."""
    _, secret = await _webhook_site(site, provider)
    r = await site.api.post("/api/v1/id-tags", json={"idTag": "FLEET-CARD"})
    assert r.status_code == 201, r.text
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        assert await charger.boot() == "Accepted"

        async def session(stop_id_tag: str) -> str:
            start = await charger.call(
                call.StartTransaction(
                    connector_id=1, id_tag="TAG-1", meter_start=0, timestamp=_now()
                )
            )
            stop = await charger.call(
                call.StopTransaction(
                    meter_stop=10,
                    timestamp=_now(),
                    transaction_id=start.transaction_id,
                    id_tag=stop_id_tag,
                )
            )
            return str(stop.id_tag_info["status"])

        assert await session("tag-1") == "Accepted"  # its own id-tag, any case
        assert len(provider.requests("/start")) == 1  # the start only
        assert await session("FLEET-CARD") == "Accepted"  # on the id-tag list
        assert len(provider.requests("/start")) == 2  # no decision left by the stop to reuse
        assert await session("STRANGER") == "Invalid"  # neither
        assert len(provider.requests("/start")) == 3
    assert all(seen.json()["connectorId"] == 1 for seen in provider.requests("/start"))


@pytest.mark.parametrize(("policy", "status"), [("deny", "Invalid"), ("allow", "Accepted")])
async def test_a_provider_timeout_answers_the_charger_by_policy(
    site: Site, provider: Provider, policy: str, status: str
) -> None:
    """A provider slower than timeoutMs: the charger gets the policy's answer in time."""
    _, secret = await _webhook_site(site, provider, timeoutMs=300, onFailure=policy)
    provider.delay = 3.0
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        assert await _authorize(charger) == status


async def _members(site: Site, installation_id: int) -> dict[str, Any]:
    r = await site.api.get(f"/api/v1/installations/{installation_id}/chargers")
    assert r.status_code == 200, r.text
    return {m["chargerId"]: m["offlineConfig"] for m in r.json()["data"]}


async def _state(site: Site, installation_id: int, charger_id: str = "CP-1") -> str | None:
    config = (await _members(site, installation_id)).get(charger_id)
    return None if config is None else str(config["state"])


async def test_boot_gets_the_offline_configuration_and_the_api_shows_it(site: Site) -> None:
    """After an accepted BootNotification the charger is sent the three keys; the API shows
    each key's answer."""
    installation = await site.installation(allowChargingWhenOffline=True)
    secret = await site.charger("CP-1", installation["id"])
    assert await _state(site, installation["id"]) == "pending"  # offline when it joined
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        await charger.boot()
        await until(lambda: charger.configuration == OFFLINE_ON)
        await _until_state(site, installation["id"], "applied")
    config = (await _members(site, installation["id"]))["CP-1"]
    assert config["allowOffline"] is True
    assert config["results"] == dict.fromkeys(OFFLINE_ON, "Accepted")


async def _until_state(site: Site, installation_id: int, state: str) -> None:
    async def reached() -> bool:
        return await _state(site, installation_id) == state

    await until(reached, within=5, message=lambda: f"state never became {state}")


async def test_changing_the_setting_pushes_to_connected_chargers(site: Site) -> None:
    """PATCH allowChargingWhenOffline reaches a connected charger without a reboot."""
    installation = await site.installation(allowChargingWhenOffline=True)
    secret = await site.charger("CP-1", installation["id"])
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        await charger.boot()
        await until(lambda: charger.configuration == OFFLINE_ON)
        r = await site.api.patch(
            f"/api/v1/installations/{installation['id']}",
            json={"allowChargingWhenOffline": False},
        )
        assert r.status_code == 200
        await until(lambda: charger.configuration == OFFLINE_OFF)
        await _until_state(site, installation["id"], "applied")
    assert (await _members(site, installation["id"]))["CP-1"]["allowOffline"] is False


async def test_joining_and_leaving_push_the_configuration(site: Site) -> None:
    """A connected charger joining an installation gets its choice; leaving it turns offline
    charging off again."""
    installation = await site.installation(allowChargingWhenOffline=True)
    secret = await site.charger("CP-1")
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        await charger.boot()
        await site.join("CP-1", installation["id"])
        await until(lambda: charger.configuration == OFFLINE_ON)
        await site.join("CP-1", None)
        await until(lambda: charger.configuration == OFFLINE_OFF)


async def test_a_key_the_charger_does_not_support_is_reported(site: Site) -> None:
    """A NotSupported answer makes the state rejected, with every key's answer shown."""
    installation = await site.installation(allowChargingWhenOffline=True)
    secret = await site.charger("CP-1", installation["id"])
    async with connected(site.ws_url("CP-1", secret), "CP-1") as charger:
        charger.answers["LocalPreAuthorize"] = "NotSupported"
        await charger.boot()
        await _until_state(site, installation["id"], "rejected")
    results = (await _members(site, installation["id"]))["CP-1"]["results"]
    assert results["LocalPreAuthorize"] == "NotSupported"
    assert results["LocalAuthorizeOffline"] == "Accepted"
