"""The operator's charging profiles (issue 18): sent with SetChargingProfile to a real OCPP
client (the ``ocpp`` library's ChargePoint), stored, listed beside the load-management
engine's, cleared with ClearChargingProfile; the engine's stack level is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from support import TestCharger, ocpp_charger, running_handle, until


class ProfileCharger(TestCharger):
    """Accepts every charging profile and keeps what it was told."""

    def __init__(self, charger_id: str, ws: Any, **kw: Any) -> None:
        super().__init__(charger_id, ws, **kw)
        self.profiles: dict[int, dict[str, Any]] = {}
        self.cleared: list[int] = []

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict) -> Any:
        self.profiles[cs_charging_profiles["charging_profile_id"]] = cs_charging_profiles
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, id: int | None = None, **_: Any) -> Any:  # noqa: A002
        self.cleared.append(id)  # type: ignore[arg-type]
        self.profiles.pop(id, None)  # type: ignore[arg-type]
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id: int, duration: int, **_: Any) -> Any:
        return call_result.GetCompositeSchedule(status="Accepted", connector_id=connector_id)


MAX_PROFILE = {
    "connectorId": 0,
    "stackLevel": 1,
    "chargingProfilePurpose": "ChargePointMaxProfile",
    "chargingProfileKind": "Relative",
    "chargingSchedule": {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20.0}],
    },
}


async def test_profiles_are_sent_stored_listed_and_cleared(
    database_url: str, tmp_path: Path
) -> None:
    """POST sends the profile with evgate's id and stores it (201); GET lists it and, once
    the charger is in a circuit, the engine's TxDefaultProfile (owner engine); the engine's
    stack level, and a higher Tx level in a circuit, are 422; DELETE clears it on the charger
    and forgets it; composite returns the charger's answer; chargingProfile.applied."""
    async with running_handle(database_url, tmp_path) as running:
        api = running.api
        secret = await running.add("CP-1")
        async with ocpp_charger(running.url("CP-1", secret), "CP-1", ProfileCharger) as charger:
            assert await charger.boot() == "Accepted"
            base = "/api/v1/chargers/CP-1/charging-profiles"
            r = await api.post(base, json=MAX_PROFILE)
            assert r.status_code == 201, r.text
            stored = r.json()
            assert stored["id"] >= 1000 and stored["status"] == "Accepted"
            assert stored["owner"] == "operator" and stored["stackLevel"] == 1
            sent = charger.profiles[stored["id"]]
            assert sent["charging_schedule"]["charging_schedule_period"][0]["limit"] == 20
            r = await api.post(base, json={**MAX_PROFILE, "stackLevel": 50})
            assert r.status_code == 422

            circuit = await api.post("/api/v1/circuits", json={"name": "D", "maxCurrent": 32})
            await api.patch("/api/v1/chargers/CP-1", json={"circuitId": circuit.json()["id"]})
            tx = {**MAX_PROFILE, "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 60}
            assert (await api.post(base, json=tx)).status_code == 422

            async def listed() -> list[dict[str, Any]] | None:
                items: list[dict[str, Any]] = (await api.get(base)).json()
                return items if any(p["owner"] == "engine" for p in items) else None

            items = await until(listed)
            assert (items[0]["id"], items[0]["owner"]) == (stored["id"], "operator")
            engine = [p for p in items if p["owner"] == "engine"]
            assert engine[0]["purpose"] == "TxDefaultProfile" and engine[0]["stackLevel"] == 50

            r = await api.get(f"{base}/composite", params={"connectorId": 1, "duration": 60})
            assert r.status_code == 200 and r.json() == {"status": "Accepted", "connectorId": 1}

            assert (await api.delete(f"{base}/{stored['id']}")).status_code == 204
            assert charger.cleared == [stored["id"]]
            assert all(p["owner"] == "engine" for p in (await api.get(base)).json())
            assert (await api.delete(f"{base}/{stored['id']}")).status_code == 404
        assert running.app.db is not None
        events = await running.app.db.fetch(
            "SELECT convert_from(payload, 'UTF8')::jsonb AS p FROM outbox"
            " WHERE event = 'chargingProfile.applied' ORDER BY id"
        )
    first = json.loads(events[0]["p"])
    assert first["chargingProfile"]["id"] == stored["id"]
    assert first["chargingProfile"]["purpose"] == "ChargePointMaxProfile"
    assert first["status"] == "accepted" and first["evseId"] is None
