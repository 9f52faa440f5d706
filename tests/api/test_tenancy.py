"""Sub-operators' tokens see and act only on their tenant's resources (issue 20).

Tested as an attacker would: a tenant's token is turned on the other tenant's ids. Two tenants
(A, the attacker, and B) and the operator each have a connected charger (a real OCPP client)
with a closed and an open transaction, a location, a tariff and tariff group, a circuit, an
installation, an id tag, a reservation, a charging profile, commands, a notification
subscription and a token; the operator has users, plans and partners too. Every operation of
the OpenAPI document that takes an id is called with A's token and B's ids (404: ids do not
leak), every list is read with A's token (none of B's or the operator's names), and the live
stream and the fleet's counts with A's token show none of theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from ocpp.v16 import call

from evgate.api import security
from evgate.api.commands import COMMANDS
from evgate.api.fleet import OWNED_RETRY, _TenantChargers
from evgate.app import Evgate
from evgate.credentials import digest
from evgate.pricing import Driver
from evgate.storage.errors import DatabaseUnavailable
from support import Receiver, TestCharger, gateway_knows, ocpp_charger, quiet_for, until

# The tenants' receivers are on loopback, which only this setting lets a sub-operator's token
# name as a target (api/targets.py; tests/api/test_tenant_targets.py tests the refusal).
pytestmark = pytest.mark.evgate_settings(tenant_private_targets=True)

# Each party's mark, in every name it gives: a list holding another's mark leaks it.
A, B, OPERATOR = "A-4412", "B-7731", "O-5590"
# Route families only the operator has (users and what hangs off them, partners, plans, the
# sub-operators themselves): a tenant's token is refused (403) or finds nothing (404).
OPERATOR_ONLY = re.compile(
    r"^/api/v1/(users|user-groups|subscription-plans|partners|partner-invites|sub-operators)\b"
)
#: A settlement period (a tenant's own reports are its to make and read; a partner's are not).
PERIOD = {"periodStart": "2026-01-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}
LOCATION = {
    "address": {"street": "Main 1", "city": "Utrecht", "postalCode": "3511", "country": "NL"},
    "geoposition": {"latitude": 52.09, "longitude": 5.12},
    "timezone": "Europe/Amsterdam",
}
TARIFF = {"currency": "EUR", "pricePerKwh": "0.30", "taxPercent": "21"}
PROFILE = {
    "connectorId": 0,
    "stackLevel": 1,
    "chargingProfilePurpose": "ChargePointMaxProfile",
    "chargingProfileKind": "Relative",
    "chargingSchedule": {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20.0}],
    },
}
LATER = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

Ids = dict[str, Any]


def _command(action: str, ids: Ids) -> dict[str, Any]:
    """A valid request payload of each command (the charger's validation passes: only its
    owner can stop it)."""
    certificate_hash = {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": "a1",
        "issuerKeyHash": "b2",
        "serialNumber": "c3",
    }
    bodies: dict[str, dict[str, Any]] = {
        "CancelReservation": {"reservationId": ids["reservation_id"]},
        "CertificateSigned": {"certificateChain": "-----BEGIN CERTIFICATE-----"},
        "ChangeAvailability": {"connectorId": 0, "type": "Inoperative"},
        "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "30"},
        "ClearCache": {},
        "ClearChargingProfile": {},
        "DataTransfer": {"vendorId": "evgate"},
        "DeleteCertificate": {"certificateHashData": certificate_hash},
        "ExtendedTriggerMessage": {"requestedMessage": "Heartbeat"},
        "GetCompositeSchedule": {"connectorId": 1, "duration": 60},
        "GetConfiguration": {},
        "GetDiagnostics": {"location": "ftp://example.com/"},
        "GetInstalledCertificateIds": {"certificateType": "CentralSystemRootCertificate"},
        "GetLocalListVersion": {},
        "GetLog": {
            "logType": "DiagnosticsLog",
            "requestId": 1,
            "log": {"remoteLocation": "https://example.com/"},
        },
        "InstallCertificate": {
            "certificateType": "CentralSystemRootCertificate",
            "certificate": "-----BEGIN CERTIFICATE-----",
        },
        "RemoteStartTransaction": {"idTag": ids["id_tag"]},
        "RemoteStopTransaction": {"transactionId": ids["transaction_id"]},
        "ReserveNow": {
            "connectorId": 1,
            "expiryDate": LATER,
            "idTag": ids["id_tag"],
            "reservationId": 424242,
        },
        "Reset": {"type": "Hard"},
        "SendLocalList": {"listVersion": 1, "updateType": "Full"},
        "SetChargingProfile": {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": 4242,
                "stackLevel": 1,
                "chargingProfilePurpose": "ChargePointMaxProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}],
                },
            },
        },
        "SignedUpdateFirmware": {
            "requestId": 1,
            "firmware": {
                "location": "https://example.com/fw",
                "retrieveDateTime": LATER,
                "signingCertificate": "-----BEGIN CERTIFICATE-----",
                "signature": "c2lnbmF0dXJl",
            },
        },
        "TriggerMessage": {"requestedMessage": "StatusNotification"},
        "UnlockConnector": {"connectorId": 1},
        "UpdateFirmware": {"location": "https://example.com/fw", "retrieveDate": LATER},
    }
    return bodies[action]  # a new command without a body here fails the test: add one


# A valid body of each operation that takes one and an id, by (method, path template): one
# that failed validation would be answered 422 before the id is looked up, hiding a leak.
BODIES: dict[tuple[str, str], Callable[[Ids], Any]] = {
    ("PATCH", "/api/v1/chargers/{charger_id}"): lambda _: {"description": "taken"},
    ("PUT", "/api/v1/chargers/{charger_id}/secret"): lambda _: {
        "secret": "the-attackers-own-secret-42"
    },
    ("POST", "/api/v1/chargers/{charger_id}/charging-profiles"): lambda _: PROFILE,
    ("PATCH", "/api/v1/installations/{installation_id}"): lambda _: {"name": "taken"},
    ("PUT", "/public-api/notifications/v2.0/{subscription_id}"): lambda _: {
        "via": "webhook",
        "notifications": ["transaction.changed"],
        "webhook": {"callbackUrl": "http://127.0.0.1:9/taken"},
    },
    ("POST", "/public-api/actions/notifications/v1.0/{subscription_id}/resend"): lambda _: {},
    ("PATCH", "/api/v1/circuits/{circuit_id}"): lambda _: {"name": "taken"},
    ("POST", "/api/v1/transactions/{transaction_id}/stop"): lambda _: {"reason": "taken"},
    ("PATCH", "/api/v1/id-tags/{id_tag}"): lambda _: {"status": "Blocked"},
    ("PATCH", "/api/v1/locations/{location_id}"): lambda _: {"name": "taken"},
    ("PATCH", "/api/v1/tariffs/{tariff_id}"): lambda _: {"name": "taken"},
    ("PATCH", "/api/v1/tariff-groups/{group_id}"): lambda _: {"name": "taken"},
    ("PATCH", "/api/v1/users/{user_id}"): lambda _: {"status": "blocked"},
    ("POST", "/api/v1/users/{user_id}/balance"): lambda _: {"amount": "10.00", "type": "topUp"},
    ("PATCH", "/api/v1/user-groups/{group_id}"): lambda _: {"name": "taken"},
    ("POST", "/api/v1/users/{user_id}/payment-methods"): lambda _: {"type": "other"},
    ("PATCH", "/api/v1/users/{user_id}/payment-methods/{method_id}"): lambda _: {"issuer": "taken"},
    ("PUT", "/api/v1/users/{user_id}/invoice-details"): lambda _: {
        "kind": "individual",
        "name": "taken",
    },
    ("PATCH", "/api/v1/subscription-plans/{plan_id}"): lambda _: {"name": "taken"},
    ("PUT", "/api/v1/users/{user_id}/subscription"): lambda ids: {"planId": ids["plan_id"]},
    ("PATCH", "/api/v1/users/{user_id}/subscription"): lambda _: {"status": "canceled"},
    ("PATCH", "/api/v1/partners/{partner_id}"): lambda _: {"name": "taken"},
    ("POST", "/api/v1/partners/{partner_id}/invites"): lambda _: {"email": "taken@example.com"},
    ("POST", "/api/v1/partner-invites/{invite_id}/accept"): lambda ids: {"userId": ids["user_id"]},
    ("PATCH", "/api/v1/sub-operators/{sub_operator_id}"): lambda _: {"name": "taken"},
}


# The required query parameters of an operation that takes an id, by path template.
QUERIES: dict[str, dict[str, Any]] = {
    "/api/v1/chargers/{charger_id}/charging-profiles/composite": {"connectorId": 1},
}


class _Recording(TestCharger):
    """A charger that records every command it receives and accepts it."""

    def __init__(self, charger_id: str, ws: Any, **kw: Any) -> None:
        super().__init__(charger_id, ws, **kw)
        self.commands: list[list[Any]] = []

    async def route_message(self, raw_msg: str) -> None:
        frame = json.loads(raw_msg)
        if frame[0] != 2:  # the answer to one of its own calls
            await super().route_message(raw_msg)
            return
        self.commands.append(frame)
        await self._send(json.dumps([3, frame[1], {"status": "Accepted"}]))


@dataclass
class Party:
    """A tenant (or the operator): its API client, its charger, and the ids of what it made,
    by the name of the path parameter that takes them."""

    mark: str
    client: httpx.AsyncClient
    charger: _Recording
    ids: Ids = field(default_factory=dict)


async def _tenant_client(evgate: Evgate, name: str) -> tuple[int, httpx.AsyncClient, int]:
    """A sub-operator and an admin token scoped to it, made in the database (as
    ``evgate tokens create --sub-operator`` would); (its id, a client with the token, the
    token's id)."""
    assert evgate.db is not None
    sub_operator = await evgate.db.fetchval(
        "INSERT INTO sub_operators (name) VALUES ($1) RETURNING id", name
    )
    token = f"token-of-{name}"
    token_id = await evgate.db.fetchval(
        "INSERT INTO api_tokens (name, scope, digest, sub_operator_id)"
        " VALUES ($1, 'admin', $2, $3) RETURNING id",
        name,
        digest(token),
        sub_operator,
    )
    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{evgate.api_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return sub_operator, client, token_id


def _at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


async def _made(client: httpx.AsyncClient, url: str, body: Any, **kw: Any) -> Any:
    r = await client.post(url, json=body, **kw)
    assert r.status_code in (201, 202), f"{url}: {r.status_code} {r.text}"
    return r.json()


async def _connected(
    evgate: Evgate, stack: contextlib.AsyncExitStack, client: httpx.AsyncClient, charger_id: str
) -> _Recording:
    """A charger made with ``client``'s token, connected (and recording) for ``stack``."""
    secret = (await _made(client, "/api/v1/chargers", {"id": charger_id}))["secret"]
    await gateway_knows(evgate, charger_id)
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/{charger_id}?auth={secret}"
    cp = await stack.enter_async_context(ocpp_charger(url, charger_id, cls=_Recording))
    gateway = evgate.gateway
    assert gateway is not None
    await until(lambda: gateway.connection(charger_id) is not None)
    return cp


async def _party(
    evgate: Evgate,
    stack: contextlib.AsyncExitStack,
    mark: str,
    client: httpx.AsyncClient,
    receiver: Receiver,
) -> Party:
    """Everything a tenant has, each made with its own token (the column default makes it its
    own): a connected charger with a closed and an open transaction, and the rest."""
    charger_id = f"CP-{mark}"
    cp = await _connected(evgate, stack, client, charger_id)
    party = Party(mark, client, cp)
    ids = party.ids
    ids["charger_id"] = charger_id
    id_tag = ids["id_tag"] = f"TAG-{mark}"
    await _made(client, "/api/v1/id-tags", {"idTag": id_tag})
    await cp.boot()
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    start = await cp.call(
        call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=0, timestamp=_at(0))
    )
    reading = {"value": "1.5", "unit": "kWh", "measurand": "Energy.Active.Import.Register"}
    await cp.call(
        call.MeterValues(
            connector_id=1,
            transaction_id=start.transaction_id,
            meter_value=[{"timestamp": _at(10), "sampled_value": [reading]}],
        )
    )
    await cp.call(
        call.StopTransaction(
            transaction_id=start.transaction_id, meter_stop=1500, timestamp=_at(20), id_tag=id_tag
        )
    )
    ids["closed_transaction_id"] = start.transaction_id
    again = await cp.call(
        call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=1500, timestamp=_at(30))
    )
    ids["transaction_id"] = again.transaction_id
    location = await _made(client, "/api/v1/locations", {**LOCATION, "name": f"LOC-{mark}"})
    tariff = await _made(client, "/api/v1/tariffs", {**TARIFF, "name": f"TAR-{mark}"})
    group = await _made(
        client,
        "/api/v1/tariff-groups",
        {"name": f"TG-{mark}", "tariffs": [{"tariffId": tariff["id"]}]},
    )
    circuit = await _made(client, "/api/v1/circuits", {"name": f"CIR-{mark}", "maxCurrent": 32})
    installation = await _made(client, "/api/v1/installations", {"name": f"INST-{mark}"})
    r = await client.patch(
        f"/api/v1/chargers/{charger_id}",
        json={
            "description": f"charger of {mark}",
            "locationId": location["id"],
            "tariffGroupId": group["id"],
            "circuitId": circuit["id"],
            "installationId": installation["id"],
        },
    )
    assert r.status_code == 200, r.text
    ids |= {
        "location_id": location["id"],
        "tariff_id": tariff["id"],
        "group_id": group["id"],
        "circuit_id": circuit["id"],
        "installation_id": installation["id"],
    }
    reservation = await _made(
        client,
        "/api/v1/reservations",
        {"chargerId": charger_id, "connectorId": 2, "idTag": id_tag, "expiryDate": LATER},
    )
    assert reservation["status"] == "active", reservation
    ids["reservation_id"] = reservation["id"]
    profile = await _made(client, f"/api/v1/chargers/{charger_id}/charging-profiles", PROFILE)
    ids["profile_id"] = profile["id"]
    command = await _made(
        client,
        f"/api/v1/chargers/{charger_id}/commands/ClearCache",
        {},
        headers={"Prefer": "respond-async"},
    )
    ids["command_id"] = command["id"]
    bulk = await _made(
        client, "/api/v1/bulk-commands", {"action": "ClearCache", "chargerIds": [charger_id]}
    )
    ids["bulk_id"] = bulk["id"]
    subscription = await _made(
        client,
        "/public-api/notifications/v2.0",
        {
            "via": "webhook",
            "notifications": ["transaction.changed"],
            "webhook": {"callbackUrl": f"{receiver.url}?of={mark}"},
        },
    )
    ids["subscription_id"] = subscription["data"]["id"]
    assert evgate.db is not None
    ids["cdr_id"] = await until(
        lambda: evgate.db.fetchval(  # type: ignore[union-attr]
            "SELECT id FROM cdrs WHERE charger_id = $1", charger_id
        )
    )
    for command_id in (ids["command_id"], bulk["commands"][0]["id"]):
        await until(
            lambda c=command_id: _completed(client, c),
            message=lambda c=command_id: f"command {c} of {mark}",
        )
    return party


async def _completed(client: httpx.AsyncClient, command_id: str) -> bool:
    return bool((await client.get(f"/api/v1/commands/{command_id}")).json()["status"] != "pending")


async def _operators_accounts(api: httpx.AsyncClient, ids: Ids) -> None:
    """The operator's users, user group, payment method, invoice details, plan, user
    subscription, partner and invite: a tenant reaches none of them."""
    group = await _made(api, "/api/v1/user-groups", {"name": f"UG-{OPERATOR}"})
    user = await _made(
        api,
        "/api/v1/users",
        {"email": f"ada-{OPERATOR}@example.com", "userGroupIds": [group["id"]]},
    )
    method = await _made(api, f"/api/v1/users/{user['id']}/payment-methods", {"type": "other"})
    r = await api.put(
        f"/api/v1/users/{user['id']}/invoice-details",
        json={"kind": "individual", "name": f"Ada {OPERATOR}"},
    )
    assert r.status_code in (200, 201), r.text
    plan = await _made(
        api,
        "/api/v1/subscription-plans",
        {
            "name": f"PLAN-{OPERATOR}",
            "fee": {"amount": "5.00", "currency": "EUR"},
            "renewalPeriod": "monthly",
        },
    )
    r = await api.put(f"/api/v1/users/{user['id']}/subscription", json={"planId": plan["id"]})
    assert r.status_code in (200, 201), r.text
    partner = await _made(api, "/api/v1/partners", {"name": f"PARTNER-{OPERATOR}"})
    invite = await _made(
        api, f"/api/v1/partners/{partner['id']}/invites", {"email": f"bo-{OPERATOR}@example.com"}
    )
    ids |= {
        "user_id": user["id"],
        "user_group_id": group["id"],
        "method_id": method["id"],
        "plan_id": plan["id"],
        "partner_id": partner["id"],
        "invite_id": invite["id"],
    }


@dataclass
class World:
    a: Party
    b: Party
    operator: Party
    # The operator's own ids (users, partners, ...), by path parameter.
    accounts: Ids


@contextlib.asynccontextmanager
async def _world(evgate: Evgate, api: httpx.AsyncClient) -> AsyncIterator[World]:
    receiver = Receiver()
    await receiver.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(receiver.stop)
        parties = []
        for mark in (A, B):
            sub_operator, client, token_id = await _tenant_client(evgate, mark)
            await stack.enter_async_context(client)
            party = await _party(evgate, stack, mark, client, receiver)
            party.ids |= {"sub_operator_id": sub_operator, "token_id": token_id}
            r = await client.post(
                "/api/v1/settlement-reports",
                json={"subOperatorId": sub_operator, "currency": "EUR", **PERIOD},
            )
            assert r.status_code == 201, r.text
            party.ids["report_id"] = r.json()["data"][0]["id"]
            parties.append(party)
        operator = await _party(evgate, stack, OPERATOR, api, receiver)
        accounts: Ids = {}
        await _operators_accounts(api, accounts)
        for party in (*parties, operator):
            party.charger.commands.clear()  # what it received while being set up
        yield World(parties[0], parties[1], operator, accounts)


async def _accounts_snapshot(api: httpx.AsyncClient, ids: Ids) -> dict[str, Any]:
    """What the operator sees of its users, plans and partners (an attack changes none)."""
    user = f"/api/v1/users/{ids['user_id']}"
    urls = [
        user,
        f"{user}/balance",
        f"{user}/payment-methods/{ids['method_id']}",
        f"{user}/invoice-details",
        f"{user}/subscription",
        f"/api/v1/user-groups/{ids['user_group_id']}",
        f"/api/v1/subscription-plans/{ids['plan_id']}",
        f"/api/v1/partners/{ids['partner_id']}",
        f"/api/v1/partner-invites/{ids['invite_id']}",
    ]
    return await _read_all(api, urls)


async def _read_all(client: httpx.AsyncClient, urls: list[str]) -> dict[str, Any]:
    seen = {}
    for url in urls:
        r = await client.get(url)
        assert r.status_code == 200, f"{url}: {r.text}"
        seen[url] = r.json()
    return seen


async def _snapshot(party: Party) -> dict[str, Any]:
    """What ``party`` sees of its own resources (to show that an attack changed none)."""
    ids, client = party.ids, party.client
    urls = [
        f"/api/v1/chargers/{ids['charger_id']}",
        f"/api/v1/chargers/{ids['charger_id']}/charging-profiles",
        f"/api/v1/id-tags/{ids['id_tag']}",
        f"/api/v1/locations/{ids['location_id']}",
        f"/api/v1/tariffs/{ids['tariff_id']}",
        f"/api/v1/tariff-groups/{ids['group_id']}",
        f"/api/v1/circuits/{ids['circuit_id']}",
        f"/api/v1/installations/{ids['installation_id']}",
        f"/api/v1/reservations/{ids['reservation_id']}",
        f"/api/v1/transactions/{ids['transaction_id']}",
        f"/public-api/notifications/v2.0/{ids['subscription_id']}",
    ]
    return await _read_all(client, urls)


def _victims_ids(world: World, path: str) -> Ids:
    """B's ids by path parameter; the operator's for the operator-only families (a tenant has
    none of those); ``group_id`` is a tariff group's or a user group's by the path."""
    ids = {**world.b.ids, **world.accounts}
    if path.startswith("/api/v1/user-groups"):
        ids["group_id"] = world.accounts["user_group_id"]
    if path.startswith("/api/v1/chargers/{charger_id}/charging-profiles/{profile_id}"):
        ids["profile_id"] = world.b.ids["profile_id"]
    return ids


async def _operations(client: httpx.AsyncClient) -> list[tuple[str, str, list[str]]]:
    """Every operation of the OpenAPI document: (method, path template, path parameters);
    its required query parameters must be in :data:`QUERIES`."""
    document = (await client.get("/api/openapi.json")).json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            required = {
                p["name"]
                for p in operation.get("parameters", [])
                if p["in"] == "query" and p.get("required")
            }
            missing = required - set(QUERIES.get(path, {}))
            assert not missing, f"{method} {path}: add its query parameters {missing} to QUERIES"
            found.append((method.upper(), path, params))
    order = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}  # deletes last
    return sorted(found, key=lambda op: order[op[0]])


async def test_a_tenant_reaches_none_of_the_others_ids(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """Every operation that takes an id, called with A's token and B's ids (every command to
    B's charger, answered at once or with Prefer: respond-async): 404 (403 or 404 for the
    operator-only families), never 2xx, and nothing of B changed nor sent to its charger."""
    async with _world(evgate, api) as world:
        a, b = world.a, world.b
        before = await _snapshot(b)
        accounts = await _accounts_snapshot(api, world.accounts)
        leaks: list[str] = []
        tried = 0

        async def attack(method: str, template: str, url: str, body: Any, **kw: Any) -> None:
            nonlocal tried
            tried += 1
            r = await a.client.request(method, url, json=body, **kw)
            allowed = {403, 404} if OPERATOR_ONLY.match(template) else {404}
            if r.status_code not in allowed:
                leaks.append(f"{method} {url}: {r.status_code} {r.text[:200]}")

        for method, template, params in await _operations(a.client):
            if not params:
                continue
            ids = _victims_ids(world, template)
            unknown = set(params) - set(ids) - {"action"}
            assert not unknown, f"{method} {template}: no victim's id for {unknown}; add one"
            url = template
            for name in params:
                if name != "action":
                    url = url.replace("{" + name + "}", str(ids[name]))
            if "action" in params:
                for action in COMMANDS:
                    target = url.replace("{action}", action)
                    await attack(method, template, target, _command(action, ids))
                    prefer = {"Prefer": "respond-async"}
                    await attack(method, template, target, _command(action, ids), headers=prefer)
                continue
            body = None
            if method in ("POST", "PUT", "PATCH"):
                make = BODIES.get((method, template))
                if make is None and method == "POST":
                    make = lambda _: None  # noqa: E731 - an action without a body
                assert make is not None, f"{method} {template}: no body to send; add one"
                body = make(ids)
            await attack(method, template, url, body, params=QUERIES.get(template))

        assert tried > 2 * len(COMMANDS) + 50, tried  # the document was read and walked
        assert not leaks, "\n".join(leaks)
        await quiet_for(0.5)  # a command sent in the background would have arrived by now
        assert b.charger.commands == [], b.charger.commands
        assert world.operator.charger.commands == []
        assert await _snapshot(b) == before
        assert await _accounts_snapshot(api, world.accounts) == accounts


async def test_a_tenant_lists_none_of_the_others(api: httpx.AsyncClient, evgate: Evgate) -> None:
    """Every list of the OpenAPI document read with A's token names nothing of B's or the
    operator's (and A's own things are there); the fleet's counts are A's, however recently
    the operator asked; the live stream shows A's chargers' changes and none of theirs."""
    async with _world(evgate, api) as world:
        a, b, operator = world.a, world.b, world.operator
        others = (b.mark.lower(), operator.mark.lower())
        own = 0
        for method, template, params in await _operations(a.client):
            if method != "GET" or params:
                continue
            r = await a.client.get(template)
            assert r.status_code in (200, 403, 503), f"{template}: {r.status_code} {r.text}"
            text = r.text.lower()
            assert not any(m in text for m in others), f"{template} leaks: {r.text[:500]}"
            own += a.mark.lower() in text
        assert own >= 9, own  # chargers, transactions, id tags, locations, tariffs, ...
        for url in ("/api/v1/transactions", "/api/v1/reservations"):
            r = await a.client.get(url, params={"chargerId": b.ids["charger_id"]})
            assert r.json()["data"] == [], f"{url}: {r.text}"
        r = await a.client.get(
            "/api/v1/chargers", params={"installationId": b.ids["installation_id"]}
        )
        assert r.json()["data"] == [], r.text

        # The fleet's counts are read at most once a second: not the operator's for A.
        assert (await api.get("/api/v1/fleet")).json()["counts"]["chargers"] == 3
        fleet = (await a.client.get("/api/v1/fleet")).json()
        assert (fleet["counts"]["chargers"], fleet["connectedHere"]) == (1, 1), fleet

        async with a.client.stream("GET", "/api/v1/events/stream") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == ": live"
            for party in (b, operator, a):  # A's last: B's and the operator's came before
                await party.charger.call(
                    call.StatusNotification(
                        connector_id=2, error_code="NoError", status="Unavailable"
                    )
                )
            seen = []
            async with asyncio.timeout(10):
                while a.ids["charger_id"] not in "".join(seen):
                    seen.append(await anext(lines))
        shown = "\n".join(seen).lower()
        assert not any(m in shown for m in others), shown


async def test_a_tenant_cannot_reference_the_others_ids(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """A's own requests naming B's resources in their bodies (its charger joining B's
    location, a tariff group of B's tariff, a reservation or bulk command on B's charger, ...)
    are answered as if the id did not exist: never 2xx, and B's charger receives nothing."""
    async with _world(evgate, api) as world:
        a, b = world.a, world.b
        mine, theirs = a.ids, b.ids
        charger = f"/api/v1/chargers/{mine['charger_id']}"
        references: list[tuple[str, str, Callable[[Any], Any]]] = [
            ("PATCH", charger, lambda x: {"locationId": x}),
            ("PATCH", charger, lambda x: {"tariffGroupId": x}),
            ("PATCH", charger, lambda x: {"installationId": x}),
            ("PATCH", charger, lambda x: {"circuitId": x}),
            ("POST", "/api/v1/locations", lambda x: {**LOCATION, "name": "L", "tariffGroupId": x}),
            ("PATCH", f"/api/v1/locations/{mine['location_id']}", lambda x: {"tariffGroupId": x}),
            (
                "POST",
                "/api/v1/tariff-groups",
                lambda x: {"name": "G", "tariffs": [{"tariffId": x}]},
            ),
            (
                "PATCH",
                f"/api/v1/tariff-groups/{mine['group_id']}",
                lambda x: {"tariffs": [{"tariffId": x}]},
            ),
            (
                "POST",
                "/api/v1/circuits",
                lambda x: {"name": "C", "maxCurrent": 16, "parentCircuitId": x},
            ),
            ("PATCH", f"/api/v1/circuits/{mine['circuit_id']}", lambda x: {"parentCircuitId": x}),
            (
                "POST",
                "/api/v1/reservations",
                lambda x: {"chargerId": x, "connectorId": 1, "idTag": "T", "expiryDate": LATER},
            ),
            (
                "POST",
                "/api/v1/bulk-commands",
                lambda x: {"action": "ClearCache", "chargerIds": [x]},
            ),
            (
                "POST",
                "/api/v1/bulk-commands",
                lambda x: {"action": "ClearCache", "installationId": x},
            ),
            ("POST", "/api/v1/id-tags", lambda x: {"idTag": "TAG-NEW", "userId": x}),
            ("PATCH", f"/api/v1/id-tags/{mine['id_tag']}", lambda x: {"userId": x}),
        ]
        names = {
            "locationId": "location_id",
            "tariffGroupId": "group_id",
            "installationId": "installation_id",
            "circuitId": "circuit_id",
            "parentCircuitId": "circuit_id",
            "tariffId": "tariff_id",
            "chargerId": "charger_id",
            "chargerIds": "charger_id",
            "userId": "user_id",
        }
        leaks = []
        for method, url, body in references:
            named = next(k for k in names if k in json.dumps(body(0)))
            victim = {**theirs, **world.accounts}[names[named]]
            nobody = "CP-NOBODY" if isinstance(victim, str) else 999_999
            r = await a.client.request(method, url, json=body(victim))
            unknown = await a.client.request(method, url, json=body(nobody))
            if r.is_success or r.status_code != unknown.status_code:
                leaks.append(f"{method} {url} {body(victim)}: {r.status_code} {r.text[:200]}")
        assert not leaks, "\n".join(leaks)
        await quiet_for(0.5)
        assert b.charger.commands == []

        # Reservation ids are one sequence for every charger (OCPP's reservationId): B's is
        # taken for A's charger too, refused before it is sent, without naming B's charger.
        reserve = {"connectorId": 1, "expiryDate": LATER, "idTag": mine["id_tag"]}
        a.charger.commands.clear()
        r = await a.client.post(
            f"{charger}/commands/ReserveNow",
            json={**reserve, "reservationId": theirs["reservation_id"]},
        )
        assert r.status_code == 422, r.text
        assert b.mark not in r.text, r.text
        assert a.charger.commands == []

        # A token A makes is A's, whatever its body says (a sub-operator's id among them).
        for body in (
            {"name": "minted", "scope": "admin"},
            {"name": "minted-b", "scope": "admin", "subOperatorId": theirs["sub_operator_id"]},
        ):
            r = await a.client.post("/api/v1/tokens", json=body)
            if not r.is_success:
                assert r.status_code in (403, 404, 422), r.text
                continue
            headers = {"Authorization": f"Bearer {r.json()['token']}"}
            listed = (await a.client.get("/api/v1/chargers", headers=headers)).json()["data"]
            assert [c["id"] for c in listed] == [mine["charger_id"]], body


async def test_a_tenants_change_reloads_the_whole_process_pricing(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """A tenant's tariff change reloads this process's tariff lookup before the answer; the
    lookup is every charger's, so it must be read as the operator, not as the tenant (which
    sees only its own tariffs: the operator's charger would be left without its tariff)."""
    _, a, _ = await _tenant_client(evgate, A)
    async with a:
        tariff = await _made(api, "/api/v1/tariffs", {**TARIFF, "name": "T-O"})
        group = await _made(
            api, "/api/v1/tariff-groups", {"name": "G-O", "tariffs": [{"tariffId": tariff["id"]}]}
        )
        await _made(api, "/api/v1/chargers", {"id": "CP-O"})
        r = await api.patch("/api/v1/chargers/CP-O", json={"tariffGroupId": group["id"]})
        assert r.status_code == 200, r.text
        pricing = evgate.pricing
        assert pricing is not None
        assert pricing.snapshot_for("CP-O", Driver(), datetime.now(UTC)) is not None
        await _made(a, "/api/v1/tariffs", {**TARIFF, "name": "T-A"})
        assert pricing.snapshot_for("CP-O", Driver(), datetime.now(UTC)) is not None


async def test_a_tenants_stream_outlives_a_database_outage() -> None:
    """The chargers a tenant's live stream shows are read again now and then: a read that
    fails (the database away) keeps the stream going with what it had (nothing, at first),
    and the next change after OWNED_RETRY reads again."""
    answers: list[set[str] | Exception] = [DatabaseUnavailable("away"), {"CP-A"}]

    async def read() -> set[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    shown = _TenantChargers(read)
    assert not await shown.shows("CP-A")
    assert not await shown.shows("CP-A")  # not read again within OWNED_RETRY
    await until(lambda: shown.shows("CP-A"), within=OWNED_RETRY + 5)
    assert answers == []


async def test_a_tenant_creates_nothing_in_the_operators_families(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """Every create of an operator-only family (users, user groups, plans, partners,
    sub-operators, ...) with a tenant's token: 403 (or 404), and nothing made. Row-level security
    refuses the row already; the answer is api/security.py's operator_guard's (a 500 before it)."""
    if not hasattr(security, "operator_guard"):
        pytest.skip("operator_guard (issue 20, the sub-operator API) is not in this tree yet")
    _, a, _ = await _tenant_client(evgate, A)
    bodies: dict[str, Any] = {
        "/api/v1/users": {"email": "x@example.com"},
        "/api/v1/user-groups": {"name": "G"},
        "/api/v1/subscription-plans": {
            "name": "P",
            "fee": {"amount": "1.00", "currency": "EUR"},
            "renewalPeriod": "monthly",
        },
        "/api/v1/partners": {"name": "P"},
        "/api/v1/sub-operators": {"name": "S"},
    }
    async with a:
        for method, template, params in await _operations(api):
            if method != "POST" or params or not OPERATOR_ONLY.match(template):
                continue
            assert template in bodies, f"POST {template}: no body to send; add one"
            r = await a.post(template, json=bodies[template])
            assert r.status_code in (403, 404), f"POST {template}: {r.status_code} {r.text}"
        for template in ("/api/v1/users", "/api/v1/partners", "/api/v1/subscription-plans"):
            assert (await api.get(template)).json()["data"] == [], template


async def test_a_tenant_makes_and_reads_only_its_own_settlement_reports(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """A sub-operator's token makes and reads its own reports; a partner's report (the
    operator's) and another tenant's are as absent as an unknown id, and it makes neither."""
    a_id, a, _ = await _tenant_client(evgate, A)
    b_id, b, _ = await _tenant_client(evgate, B)
    partner = (await api.post("/api/v1/partners", json={"name": "Acme"})).json()["id"]
    async with a, b:
        body = {"currency": "EUR", **PERIOD}
        r = await api.post("/api/v1/settlement-reports", json={"partnerId": partner, **body})
        assert r.status_code == 201, r.text
        partners_report = r.json()["data"][0]["id"]
        r = await b.post("/api/v1/settlement-reports", json={"subOperatorId": b_id, **body})
        assert r.status_code == 201, r.text
        b_report = r.json()["data"][0]["id"]
        r = await a.post("/api/v1/settlement-reports", json={"subOperatorId": a_id, **body})
        assert r.status_code == 201, r.text
        a_report = r.json()["data"][0]["id"]

        listed = (await a.get("/api/v1/settlement-reports")).json()["data"]
        assert [report["id"] for report in listed] == [a_report]
        for other in (partners_report, b_report):
            assert (await a.get(f"/api/v1/settlement-reports/{other}")).status_code == 404
        unknown = await a.post(
            "/api/v1/settlement-reports", json={"subOperatorId": 999_999, **body}
        )
        for owner in ({"partnerId": partner}, {"subOperatorId": b_id}):
            r = await a.post("/api/v1/settlement-reports", json={**owner, **body})
            assert r.status_code in (403, unknown.status_code), r.text
        assert evgate.db is not None
        assert await evgate.db.fetchval("SELECT count(*) FROM settlement_reports") == 3


async def test_a_tenants_reservation_id_moves_no_one_elses_sequence(
    api: httpx.AsyncClient, evgate: Evgate
) -> None:
    """Second review of issue 20: a tenant's ReserveNow with reservationId 2^31 - 1 moved the
    one reservation id sequence to its end, and every reservation evgate numbers (anyone's)
    failed after. A tenant's id never moves it, nor an operator's far ahead of it."""
    _, a, _ = await _tenant_client(evgate, A)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(a)
        await _connected(evgate, stack, a, "CP-A-9")
        await _connected(evgate, stack, api, "CP-OP-9")
        for client, charger in ((a, "CP-A-9"), (api, "CP-OP-9")):
            r = await client.post(
                f"/api/v1/chargers/{charger}/commands/ReserveNow",
                json={
                    "connectorId": 1,
                    "expiryDate": LATER,
                    "idTag": "T",
                    "reservationId": 2**31 - 1 - (client is api),
                },
            )
            assert r.status_code == 200, r.text
        r = await api.post(
            "/api/v1/reservations",
            json={"chargerId": "CP-OP-9", "connectorId": 2, "idTag": "T", "expiryDate": LATER},
        )
        assert r.status_code == 201, r.text
        assert r.json()["id"] < 1000
