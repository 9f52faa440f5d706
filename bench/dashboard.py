"""The operator dashboard with a big fleet: how long its pages and the API calls behind them
take with ``--chargers`` (20,000) registered, against the same pages with 100 registered, in
the same run; and, with ``--screenshots DIR``, a screenshot of each main page.

What is measured, on one evgate (embedded PostgreSQL, or ``EVGATE_DATABASE_URL``):

* api: the median time (ms, of ``--repeat`` calls, after one unmeasured) of each call the fleet
  page makes: the first page of 50 chargers with their connectors, a page deep in the list
  (keyset ``after``), a search that matches one charger (a part of its id) and one that
  matches none (every row read), the connector-status filter (1 % Faulted), the counts as
  served (read at most once a second per process) and their query itself.
* browser: the median time (ms, of 5) in Debian's chromium (Playwright), from the action to the
  result on screen: opening the fleet page (counts and first page shown), a search, the next
  page.

The peer is the same evgate and browser with 100 chargers registered (measured first; then
the rest are added): a ratio near 1 says the page costs the same whatever the fleet's size.
Chargers are added by SQL (``id``, description, network status; a connector status each,
1 % Faulted); two real chargers (the ``ocpp`` library's ChargePoint) connect, boot, charge with
six hours of meter values, and one goes Faulted, so that every page has something to show.

Run from the project venv: ``python bench/dashboard.py`` (table) or ``--json``;
``python bench/dashboard.py --screenshots docs/dashboard`` writes the PNGs the README shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import evgate  # noqa: F401
except ImportError:  # a plain checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

import httpx
import uvloop
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from playwright.async_api import Page, async_playwright, expect

from evgate.app import Evgate
from evgate.config import load_settings
from evgate.storage.chargers import ChargerStore

CHROMIUM = "/usr/bin/chromium"
TOKEN = "bench-dashboard-token-0123456789"
PEER = 100


class DemoCharger(ChargePoint):  # type: ignore[misc]
    """A charger that accepts Reset and answers GetConfiguration."""

    @on(Action.reset)
    def on_reset(self, type: str) -> Any:  # noqa: A002 - OCPP's name
        return call_result.Reset(status="Accepted")

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.get_configuration)
    def on_get_configuration(self, **_: Any) -> Any:
        return call_result.GetConfiguration(
            configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]
        )


@contextlib.asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[tuple[Evgate, httpx.AsyncClient]]:
    settings = load_settings(
        environ={},
        database_url=os.environ.get("EVGATE_DATABASE_URL"),
        data_dir=str(data_dir),
        ws_host="127.0.0.1",
        ws_port=0,
        api_port=0,
        bootstrap_token=TOKEN,
        notification_retry_schedule="1s",
        notification_delivery="inline",  # the one process delivers (no `evgate serve` here)
    )
    app = Evgate(settings)
    await app.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.api_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ) as api:
            yield app, api
    finally:
        await app.stop()


async def add_fleet(app: Evgate, first: int, last: int) -> None:
    """Chargers CP-{first}..CP-{last} (6 digits), with a connector status each."""
    assert app.db is not None
    async with app.db.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO chargers (id, description, secret_digest, network_status,"
            " network_status_at)"
            " SELECT 'CP-' || lpad(i::text, 6, '0'), 'Site ' || (i % 400) || ', bay ' || (i % 8),"
            "  sha256(i::text::bytea),"
            "  CASE WHEN i % 10 = 0 THEN 'temporarily unavailable'"
            "       WHEN i % 7 = 0 THEN 'never connected' ELSE 'available' END,"
            "  now() - (i % 600) * interval '1 minute'"
            " FROM generate_series($1::int, $2::int) i",
            first,
            last,
        )
        await conn.execute(
            "INSERT INTO connectors (charger_id, connector_id, status, error_code, status_at,"
            " updated_at)"
            " SELECT 'CP-' || lpad(i::text, 6, '0'), 1,"
            "  CASE WHEN i % 100 = 1 THEN 'Faulted' WHEN i % 4 = 0 THEN 'Charging'"
            "       ELSE 'Available' END,"
            "  CASE WHEN i % 100 = 1 THEN 'GroundFailure' ELSE 'NoError' END, now(), now()"
            " FROM generate_series($1::int, $2::int) i WHERE i % 7 <> 0",
            first,
            last,
        )
        await conn.execute("ANALYZE chargers; ANALYZE connectors")


@contextlib.asynccontextmanager
async def demo_chargers(app: Evgate, api: httpx.AsyncClient) -> AsyncIterator[None]:
    """DEMO-01 charging (six hours of meter values), DEMO-02 Faulted; an installation, a
    subscription whose receiver is down (a failed delivery)."""
    r = await api.post(
        "/api/v1/installations", json={"name": "Depot Nord", "authorizationMode": "native"}
    )
    installation = r.json()["id"]
    await api.post(
        "/public-api/notifications/v2.0",
        json={
            "via": "webhook",
            "notifications": ["ChargePointChangedNotification", "HardwareStatusNotification"],
            "webhook": {"callbackUrl": "http://127.0.0.1:9/hook"},
        },
    )
    await api.post("/api/v1/id-tags", json={"idTag": "TAG-0042"})
    secrets = {}
    for charger_id, description in [
        ("DEMO-01", "Depot Nord, bay 1"),
        ("DEMO-02", "Depot Nord, bay 2"),
    ]:
        r = await api.post("/api/v1/chargers", json={"id": charger_id, "description": description})
        secrets[charger_id] = r.json()["secret"]
        await api.patch(f"/api/v1/chargers/{charger_id}", json={"installationId": installation})
    assert app.gateway is not None
    gateway = app.gateway
    while any(gateway.credentials_of(c) is None for c in secrets):  # noqa: ASYNC110 - a poll
        await asyncio.sleep(0.05)
    async with contextlib.AsyncExitStack() as stack:
        chargers = {}
        for charger_id, secret in secrets.items():
            ws = await stack.enter_async_context(
                websockets.connect(
                    f"ws://127.0.0.1:{app.ws_port}/cp/{charger_id}?auth={secret}",
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                )
            )
            cp = DemoCharger(charger_id, ws)
            task = asyncio.create_task(cp.start())
            stack.callback(task.cancel)
            chargers[charger_id] = cp
            await cp.call(
                call.BootNotification(
                    charge_point_vendor="Acme",
                    charge_point_model="AC22",
                    firmware_version="4.2.1",
                    charge_point_serial_number=f"SN-{charger_id}",
                )
            )
        one, two = chargers["DEMO-01"], chargers["DEMO-02"]
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        start = now - timedelta(hours=6)
        await one.call(
            call.StatusNotification(connector_id=2, error_code="NoError", status="Available")
        )
        started = await one.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG-0042", meter_start=100_000, timestamp=start.isoformat()
            )
        )
        await one.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Charging")
        )
        energy = 100_000.0
        for step in range(72):  # every 5 minutes for six hours
            at = start + timedelta(minutes=5 * step + 2)
            power = 7400 if step % 24 < 16 else 3700 if step % 24 < 20 else 0
            energy += power / 12
            await one.call(
                call.MeterValues(
                    connector_id=1,
                    transaction_id=started.transaction_id,
                    meter_value=[
                        {
                            "timestamp": at.isoformat(),
                            "sampled_value": [
                                {
                                    "value": str(power),
                                    "measurand": "Power.Active.Import",
                                    "unit": "W",
                                },
                                {
                                    "value": str(round(energy)),
                                    "measurand": "Energy.Active.Import.Register",
                                    "unit": "Wh",
                                },
                            ],
                        }
                    ],
                )
            )
        await two.call(
            call.StatusNotification(connector_id=1, error_code="GroundFailure", status="Faulted")
        )
        await one.call(call.Heartbeat())
        yield


async def sign_in(page: Page, base: str) -> None:
    await page.goto(base + "/")
    await page.get_by_label("API token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Fleet")).to_be_visible()


async def settled(page: Page) -> None:
    """Every request of the page answered (the dashboard keeps the count on <body>)."""
    await expect(page.locator("body")).to_have_attribute("data-pending", "0", timeout=60_000)


async def median_ms(action: Callable[[], Awaitable[Any]], repeat: int) -> float:
    await action()  # unmeasured: caches, prepared statements
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


async def api_timings(
    app: Evgate, api: httpx.AsyncClient, size: int, repeat: int
) -> dict[str, float]:
    one = f"CP-{size // 2 + 3:06d}"
    deep = f"CP-{size * 3 // 4:06d}"
    calls = {
        "first page": "/api/v1/chargers?limit=50",
        "deep page": f"/api/v1/chargers?limit=50&after={deep}",
        "search, 1 match": f"/api/v1/chargers?limit=50&q={one}",
        "search, no match": "/api/v1/chargers?limit=50&q=no-such-charger",
        "filter Faulted": "/api/v1/chargers?limit=50&connectorStatus=Faulted",
        "counts (served)": "/api/v1/fleet",
    }
    out = {}
    for name, path in calls.items():

        async def get(path: str = path) -> None:
            r = await api.get(path)
            r.raise_for_status()

        out[name] = await median_ms(get, repeat)
    # The counts are served from a read at most a second old: the read itself, uncached.
    assert app.db is not None
    out["counts (query)"] = await median_ms(ChargerStore(app.db).counts, repeat)
    return out


async def browser_timings(page: Page, base: str, size: int) -> dict[str, float]:
    one = f"CP-{size // 2 + 3:06d}"
    rows = page.locator("#chargers tbody tr")

    times = []
    for _ in range(6):  # from another page, so that nothing of the fleet page is shown
        await page.goto(base + "/#/installations")
        await settled(page)
        started = time.perf_counter()
        await page.goto(base + "/#/fleet")
        await expect(rows).to_have_count(50, timeout=60_000)
        await expect(page.locator("#summary .card").first).to_be_visible()
        await settled(page)
        times.append((time.perf_counter() - started) * 1000)
    out = {"open fleet": round(statistics.median(times[1:]), 2)}
    # Search: only the search itself is timed (opening the page is the first case).
    times = []
    for _ in range(6):
        await page.goto(base + "/#/fleet")
        await settled(page)
        started = time.perf_counter()
        await page.get_by_label("Search id or description").fill(one)
        await page.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1, timeout=60_000)
        await settled(page)
        times.append((time.perf_counter() - started) * 1000)
    out["search"] = round(statistics.median(times[1:]), 2)
    await page.goto(base + "/#/fleet")
    await settled(page)
    times = []
    for _ in range(6):  # Next page timed, then back (not timed)
        started = time.perf_counter()
        await page.get_by_role("button", name="Next page").click()
        await expect(page.get_by_text("Chargers, page 2")).to_be_visible(timeout=60_000)
        await settled(page)
        times.append((time.perf_counter() - started) * 1000)
        await page.get_by_role("button", name="Previous page").click()
        await expect(page.get_by_text("Chargers, page 1")).to_be_visible(timeout=60_000)
        await settled(page)
    out["next page"] = round(statistics.median(times[1:]), 2)
    return out


async def screenshots(page: Page, base: str, out: Path) -> None:
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    await page.goto(base + "/")
    await page.evaluate("sessionStorage.clear()")
    await page.goto(base + "/#/signin")
    await page.screenshot(path=str(out / "signin.png"))
    await sign_in(page, base)
    shots = [
        ("fleet.png", "#/fleet", False),
        ("charger.png", "#/chargers/DEMO-01", True),
        ("transactions.png", "#/transactions", False),
        ("notifications.png", "#/notifications", False),
        ("installations.png", "#/installations/1", False),
    ]
    for name, hash_, full in shots:
        await page.goto(base + "/" + hash_)
        await settled(page)
        await page.screenshot(path=str(out / name), full_page=full)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(base + "/#/fleet")
    await settled(page)
    await page.screenshot(path=str(out / "fleet-phone.png"))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="evgate-dashboard-") as tmp:
        async with running(Path(tmp)) as (app, api), async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            base = f"http://127.0.0.1:{app.api_port}"
            try:
                if args.screenshots:
                    await add_fleet(app, 1, 500)
                    async with demo_chargers(app, api):
                        await asyncio.sleep(3)  # the failed delivery's retry gives up
                        await screenshots(page, base, Path(args.screenshots))
                    return {"screenshots": args.screenshots}
                await add_fleet(app, 1, PEER)
                await sign_in(page, base)
                small_api = await api_timings(app, api, PEER, args.repeat)
                small_browser = await browser_timings(page, base, PEER)
                started = time.perf_counter()
                await add_fleet(app, PEER + 1, args.chargers)
                added_s = time.perf_counter() - started
                big_api = await api_timings(app, api, args.chargers, args.repeat)
                big_browser = await browser_timings(page, base, args.chargers)
            finally:
                await browser.close()
    return {
        "chargers": args.chargers,
        "peer_chargers": PEER,
        "fleet_added_s": round(added_s, 1),
        "api_ms": big_api,
        "api_peer_ms": small_api,
        "browser_ms": big_browser,
        "browser_peer_ms": small_browser,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20, help="API calls per case")
    parser.add_argument("--screenshots", metavar="DIR", help="write the pages' PNGs there")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = uvloop.run(run(args))
    if args.json or args.screenshots:
        print(json.dumps(result))
        return
    n, peer = result["chargers"], result["peer_chargers"]
    print(f"dashboard with {n:,} chargers against {peer} (median ms; ratio = {n:,} / {peer})")
    for kind in ("api", "browser"):
        print(f"  {kind}")
        for name, ms in result[f"{kind}_ms"].items():
            small = result[f"{kind}_peer_ms"][name]
            print(f"    {name:<18} {ms:>9.1f} {small:>9.1f} {ms / small:>7.2f}x")


if __name__ == "__main__":
    main()
