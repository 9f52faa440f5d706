"""A sub-operator's token cannot make evgate call loopback, private, link-local or reserved
addresses (issue 20): subscriptions' callbackUrl and Kafka brokers, installations' webhook
URLs are refused (422) when their host is such a literal IP address or localhost; the
operator's are not, and EVGATE_TENANT_PRIVATE_TARGETS lets tenants name them too.

A real evgate; the tenant's token is made through the API. No target is ever called: the
subscriptions are to events no test makes, the installations see no charger.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from evgate.addresses import private_host
from evgate.app import Evgate

PROBLEM = "application/problem+json"
SUBSCRIPTIONS = "/public-api/notifications/v2.0"
INSTALLATIONS = "/api/v1/installations"

# Every kind of refused host, as a URL writes it.
REFUSED = [
    "127.0.0.1",
    "[::1]",
    "169.254.169.254",
    "10.0.0.1",
    "192.168.1.1",
    "[fd00::1]",
    "localhost",
    "a.localhost",
    "[::ffff:127.0.0.1]",
    "127.1",  # the legacy forms the system resolver still reads as 127.0.0.1
    "2130706433",
    "0.0.0.0",
    "100.100.100.200",  # shared address space: a cloud's metadata service
]
PAYLOAD = "grant_type=client_credentials&client_id=evgate&client_secret=s3cret"


@pytest.fixture
async def tenant(api: httpx.AsyncClient, evgate: Evgate) -> AsyncIterator[httpx.AsyncClient]:
    """A client with an admin token scoped to a new sub-operator."""
    r = await api.post("/api/v1/sub-operators", json={"name": "Reseller"})
    assert r.status_code == 201, r.text
    r = await api.post(
        "/api/v1/tokens", json={"name": "T", "scope": "admin", "subOperatorId": r.json()["id"]}
    )
    assert r.status_code == 201, r.text
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {r.json()['token']}"},
        timeout=10,
    ) as client:
        yield client


def _webhook(url: str) -> dict[str, object]:
    return {
        "notifications": ["BootNotification"],
        "via": "webhook",
        "webhook": {"callbackUrl": url},
    }


def _kafka(*brokers: str) -> dict[str, object]:
    return {
        "notifications": ["BootNotification"],
        "via": "kafka",
        "kafka": {"topic": "evgate", "brokers": list(brokers)},
    }


def _installation(**webhook: str) -> dict[str, object]:
    if "authenticationUrl" in webhook:
        webhook["authenticationPayload"] = PAYLOAD
    return {"name": "Site", "authorizationMode": "webhook", "webhook": webhook}


def _refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["detail"].startswith(f"{field}: "), r.text
    assert "EVGATE_TENANT_PRIVATE_TARGETS" in r.json()["detail"]


@pytest.mark.parametrize("host", REFUSED)
async def test_a_tenants_callback_url_on_a_private_host_is_refused(
    tenant: httpx.AsyncClient, host: str
) -> None:
    _refused(
        await tenant.post(SUBSCRIPTIONS, json=_webhook(f"http://{host}:8080/x")),
        "webhook.callbackUrl",
    )
    # Nor can a PUT point its own subscription there.
    r = await tenant.post(SUBSCRIPTIONS, json=_webhook("https://hooks.example.com/x"))
    assert r.status_code == 201, r.text
    path = f"{SUBSCRIPTIONS}/{r.json()['data']['id']}"
    _refused(await tenant.put(path, json=_webhook(f"https://{host}/x")), "webhook.callbackUrl")
    assert (await tenant.get(path)).json()["data"]["webhook"]["callbackUrl"] == (
        "https://hooks.example.com/x"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "169.254.169.254"])
async def test_a_tenants_kafka_broker_on_a_private_host_is_refused(
    tenant: httpx.AsyncClient, host: str
) -> None:
    r = await tenant.post(SUBSCRIPTIONS, json=_kafka("kafka.example.com:9092", f"{host}:9092"))
    _refused(r, "kafka.brokers")
    r = await tenant.post(SUBSCRIPTIONS, json=_kafka("kafka.example.com:9092"))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("member", ["sessionStartUrl", "sessionEndUrl", "authenticationUrl"])
@pytest.mark.parametrize("host", ["127.0.0.1", "[fd00::1]", "169.254.169.254", "a.localhost"])
async def test_a_tenants_installation_webhook_on_a_private_host_is_refused(
    tenant: httpx.AsyncClient, member: str, host: str
) -> None:
    public = {"sessionStartUrl": "https://provider.example.com/start"}
    r = await tenant.post(
        INSTALLATIONS, json=_installation(**{**public, member: f"http://{host}/x"})
    )
    _refused(r, f"webhook.{member}")
    r = await tenant.post(INSTALLATIONS, json=_installation(**public))
    assert r.status_code == 201, r.text
    path = f"{INSTALLATIONS}/{r.json()['id']}"
    patch: dict[str, str] = {member: f"http://{host}/x"}
    if member == "authenticationUrl":
        patch["authenticationPayload"] = PAYLOAD
    _refused(await tenant.patch(path, json={"webhook": patch}), f"webhook.{member}")
    # Unchanged: the start URL given at creation, no end or authentication URL.
    assert (await tenant.get(path)).json()["webhook"][member] in (None, public["sessionStartUrl"])


async def test_the_operator_may_name_private_hosts(api: httpx.AsyncClient) -> None:
    for host in ("127.0.0.1", "169.254.169.254", "[::ffff:127.0.0.1]", "localhost"):
        r = await api.post(SUBSCRIPTIONS, json=_webhook(f"http://{host}:9/x"))
        assert r.status_code == 201, r.text
    r = await api.post(SUBSCRIPTIONS, json=_kafka("127.0.0.1:9"))
    assert r.status_code == 201, r.text
    r = await api.post(
        INSTALLATIONS,
        json=_installation(
            authenticationUrl="http://10.0.0.1/token",
            sessionStartUrl="http://127.0.0.1:9/start",
            sessionEndUrl="http://[::1]:9/end",
        ),
    )
    assert r.status_code == 201, r.text


async def test_the_operator_may_make_a_tenants_installation_with_private_hosts(
    api: httpx.AsyncClient, tenant: httpx.AsyncClient
) -> None:
    """The operator's request decides, even when what it makes is the sub-operator's."""
    sub_operator = (await api.get("/api/v1/sub-operators")).json()["data"][0]["id"]
    body = _installation(sessionStartUrl="http://127.0.0.1:9/start")
    r = await api.post(INSTALLATIONS, json={**body, "subOperatorId": sub_operator})
    assert r.status_code == 201, r.text
    assert (await tenant.get(f"{INSTALLATIONS}/{r.json()['id']}")).status_code == 200


@pytest.mark.evgate_settings(tenant_private_targets=True)
async def test_the_setting_lets_a_tenant_name_private_hosts(tenant: httpx.AsyncClient) -> None:
    r = await tenant.post(SUBSCRIPTIONS, json=_webhook("http://127.0.0.1:9/x"))
    assert r.status_code == 201, r.text
    r = await tenant.post(SUBSCRIPTIONS, json=_kafka("[::1]:9"))
    assert r.status_code == 201, r.text
    r = await tenant.post(
        INSTALLATIONS,
        json=_installation(
            authenticationUrl="http://localhost:9/token", sessionStartUrl="http://10.0.0.1/start"
        ),
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "host", ["8.8.8.8", "2001:4860::8888", "hooks.example.com", "face.cafe", "10.example.com"]
)
def test_public_addresses_and_names_are_no_private_hosts(host: str) -> None:
    """Names are not resolved (README: the limit of the check); public addresses pass."""
    assert private_host(host) is None


@pytest.mark.parametrize(
    "host", ["LOCALHOST.", "0x7f.0.0.1", "fe80::1%eth0", "::", "224.0.0.1", "240.0.0.1"]
)
def test_spellings_of_private_hosts_are_private(host: str) -> None:
    assert private_host(host) is not None
