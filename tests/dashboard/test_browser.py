"""The dashboard in a real browser: an operator signs in, sees a charger that a real OCPP client
connected, watches its status change live, resets it and reads its answer; a read token sees
no action and the API refuses its writes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from ocpp.v16 import call
from playwright.async_api import Page, expect

from support import (
    BOOTSTRAP_TOKEN,
    Receiver,
    Reply,
    TestCharger,
    ocpp_charger,
    running_handle,
    until,
)


async def sign_in(page: Page, base: str, token: str) -> None:
    """Sign in with the keyboard only: the token field has the focus when the page opens."""
    await page.goto(base + "/")
    await expect(page.get_by_label("API token")).to_be_focused()
    await page.keyboard.type(token)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Fleet")).to_be_visible()


async def status(charger: TestCharger, value: str, connector: int = 1) -> None:
    await charger.call(
        call.StatusNotification(connector_id=connector, error_code="NoError", status=value)
    )


async def test_operator_watches_a_charger_live_and_resets_it(
    database_url: str, tmp_path: Path, page: Page
) -> None:
    async with running_handle(database_url, tmp_path) as run:
        secret = await run.charger("CP-1")
        base = f"http://127.0.0.1:{run.app.api_port}"
        async with ocpp_charger(run.url("CP-1", secret), "CP-1") as charger:
            await charger.boot()
            await status(charger, "Available")
            await sign_in(page, base, BOOTSTRAP_TOKEN)
            assert BOOTSTRAP_TOKEN not in page.url
            row = page.locator('tr[data-charger="CP-1"]')
            await expect(row).to_contain_text("available")
            await expect(row).to_contain_text("#1 Available")
            await expect(page.locator("#live")).to_have_text("● live")

            # Live: the row changes without a reload (a marker set in the page survives).
            await page.evaluate("window.notReloaded = true")
            started = time.monotonic()
            await status(charger, "Faulted")
            await expect(row).to_contain_text("#1 Faulted", timeout=5000)
            shown_after = time.monotonic() - started
            assert await page.evaluate("window.notReloaded === true")
            print(f"Faulted shown {shown_after:.2f} s after the StatusNotification was answered")
            await expect(page.locator("#summary")).to_contain_text("connectors Faulted")

            # The charger's page: its connectors, connection, boot info and messages.
            await row.get_by_role("link", name="CP-1").click()
            await expect(page.get_by_role("heading", name="Charger CP-1")).to_be_visible()
            await expect(page.locator('tr[data-connector="1"]')).to_contain_text("Faulted")
            await expect(page.locator("#network-status")).to_have_text("available")
            boot = page.get_by_role("region", name="Boot")
            await expect(boot).to_contain_text("evgate-tests")
            await status(charger, "Unavailable")
            await expect(page.locator('tr[data-connector="1"]')).to_contain_text("Unavailable")

            # Reset, and the charger's answer.
            await page.get_by_label("Type").first.select_option("Hard")
            await page.get_by_role("button", name="Send Reset").click()
            answer = page.get_by_role("status", name="Reset answer")
            await expect(answer).to_contain_text('"status": "Accepted"')
            frames = page.locator("ol.frames")
            await expect(frames).to_contain_text('"Reset"')
            await expect(frames).to_contain_text('{"type":"Hard"}')


async def test_read_token_gets_no_actions_and_its_writes_are_refused(
    database_url: str, tmp_path: Path, page: Page
) -> None:
    async with running_handle(database_url, tmp_path) as run:
        secret = await run.charger("CP-1")
        r = await run.api.post("/api/v1/tokens", json={"name": "night shift", "scope": "read"})
        token = r.json()["token"]
        base = f"http://127.0.0.1:{run.app.api_port}"
        async with ocpp_charger(run.url("CP-1", secret), "CP-1"):
            await sign_in(page, base, token)
            await expect(page.locator("#who")).to_have_text("read only")
            await page.locator('tr[data-charger="CP-1"]').get_by_role("link").click()
            await expect(page.get_by_role("heading", name="Connection")).to_be_visible()
            await expect(page.get_by_role("heading", name="Commands")).to_have_count(0)
            await expect(page.locator("button.action, form .action")).to_have_count(0)
            # The browser's own request with the token it holds: the API refuses the write.
            refused = await page.evaluate(
                """async () => {
                    const r = await fetch('/api/v1/chargers/CP-1/commands/Reset', {
                        method: 'POST',
                        headers: {
                            Authorization: 'Bearer ' + sessionStorage.getItem('evgate.token'),
                            'Content-Type': 'application/json',
                        },
                        body: JSON.stringify({type: 'Soft'}),
                    });
                    return r.status;
                }"""
            )
            assert refused == 403
            assert token not in page.url


# The text elements whose colour has less than 4.5:1 contrast (WCAG AA) with the background
# they are drawn on (the first opaque one up the tree).
LOW_CONTRAST = """() => {
    const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = (v) => {
            v /= 255;
            return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
        };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
        for (; el; el = el.parentElement) {
            const c = rgb(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    const low = [];
    for (const el of document.querySelectorAll("body *")) {
        const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
        if (!own || !el.getClientRects().length) continue;
        const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        if (ratio < 4.5) low.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)}`);
    }
    return low;
}"""


async def test_pages_are_labelled_readable_and_fit_a_phone(
    database_url: str, tmp_path: Path, page: Page
) -> None:
    """Every form control has a label, all text has AA contrast, and no page is wider than a
    phone's screen."""
    async with running_handle(database_url, tmp_path) as run:
        await run.charger("CP-WITH-A-RATHER-LONG-IDENTIFIER-0001")
        base = f"http://127.0.0.1:{run.app.api_port}"
        await page.set_viewport_size({"width": 390, "height": 844})
        await sign_in(page, base, BOOTSTRAP_TOKEN)
        for hash_, heading in [
            ("#/fleet", "Fleet"),
            ("#/chargers/CP-WITH-A-RATHER-LONG-IDENTIFIER-0001", "Charger CP-WITH"),
            ("#/transactions", "Transactions"),
            ("#/notifications", "Notifications"),
            ("#/installations", "Installations"),
        ]:
            await page.goto(base + "/" + hash_)
            await expect(page.get_by_role("heading", name=heading).first).to_be_visible()
            await expect(page.locator("body")).to_have_attribute("data-pending", "0")
            unlabelled = await page.evaluate(
                """() => [...document.querySelectorAll('input, select, textarea')]
                    .filter((e) => e.labels.length === 0).map((e) => e.id || e.name)"""
            )
            assert unlabelled == [], hash_
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (hash_, overflow)
            low = await page.evaluate(LOW_CONTRAST)
            assert low == [], (hash_, low)


async def test_notifications_page_shows_failed_deliveries_and_resends_them(
    database_url: str, tmp_path: Path, page: Page
) -> None:
    """A subscription whose receiver failed: its failed delivery is listed with the count, and
    Resend queues it again (then the receiver, back, gets it)."""
    answers = {"status": 500}
    receiver = Receiver(lambda _: Reply(status=answers["status"]))
    await receiver.start()
    try:
        async with running_handle(database_url, tmp_path, notification_retry_schedule="1s") as run:
            r = await run.api.post(
                "/public-api/notifications/v2.0",
                json={
                    "via": "webhook",
                    "notifications": ["ChargePointChangedNotification"],
                    "webhook": {"callbackUrl": receiver.url},
                },
            )
            sub = r.json()["data"]["id"]
            await run.charger("CP-1")  # chargePoint.changed: created
            await until(lambda: len(receiver.requests) >= 2, within=30)  # first try, retry
            base = f"http://127.0.0.1:{run.app.api_port}"
            await sign_in(page, base, BOOTSTRAP_TOKEN)
            await page.get_by_role("link", name="Notifications").click()
            region = page.get_by_role("region", name=f"Subscription {sub}")
            await expect(region.locator(".failed")).to_have_text("1", timeout=15000)
            await expect(region).to_contain_text("ChargePointChangedNotification")
            answers["status"] = 202
            await region.get_by_role("button", name="Resend failed deliveries").click()
            await expect(region).to_contain_text("1 deliveries queued again.")
            await receiver.wait_for(1)
            await expect(region.locator(".failed")).to_have_text("0", timeout=15000)
    finally:
        await receiver.stop()


async def test_transactions_and_installations_pages(
    database_url: str, tmp_path: Path, page: Page
) -> None:
    """A transaction a real charger started is listed and shown; an installation lists its
    chargers."""
    async with running_handle(database_url, tmp_path) as run:
        secret = await run.charger("CP-1")
        r = await run.api.post(
            "/api/v1/installations", json={"name": "Depot Nord", "authorizationMode": "native"}
        )
        installation = r.json()["id"]
        await run.api.patch("/api/v1/chargers/CP-1", json={"installationId": installation})
        await run.api.post("/api/v1/id-tags", json={"idTag": "TAG-7"})
        base = f"http://127.0.0.1:{run.app.api_port}"
        async with ocpp_charger(run.url("CP-1", secret), "CP-1") as charger:
            started = await charger.call(
                call.StartTransaction(
                    connector_id=1, id_tag="TAG-7", meter_start=1000, timestamp=_now()
                )
            )
            await sign_in(page, base, BOOTSTRAP_TOKEN)
            await page.get_by_role("link", name="Transactions").click()
            link = page.get_by_role("link", name=str(started.transaction_id), exact=True)
            await link.click()
            heading = f"Transaction {started.transaction_id}"
            await expect(page.get_by_role("heading", name=heading)).to_be_visible()
            await expect(page.locator("main")).to_contain_text("TAG-7 (Accepted)")
            # An open transaction can be stopped from its page; the charger answers.
            await page.get_by_role("button", name="Send RemoteStopTransaction").click()
            await expect(
                page.get_by_role("status", name="RemoteStopTransaction answer")
            ).to_contain_text("NotImplemented")
        await page.get_by_role("link", name="Installations").click()
        await page.get_by_role("link", name=str(installation), exact=True).click()
        await expect(page.locator("main")).to_contain_text("Depot Nord")
        await expect(page.get_by_role("link", name="CP-1")).to_be_visible()


def _now() -> str:
    return datetime.now(UTC).isoformat()
