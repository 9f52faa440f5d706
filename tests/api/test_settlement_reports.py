"""Settlement reports (issue 20): a partner's (its members' priced CDRs) or a sub-operator's
(the priced CDRs of the chargers it owned at their stop) for a period, one per currency, of the
CDRs recorded in the period (those stopped before it apart: the previous periods'), made on
demand through the API and by the monthly pass exactly once across processes; a tenant sees
only its own reports.

The CDRs written directly are recorded in 2024: never the previous month of a running evgate's
own monthly pass (its clock is the real one), which would report them besides the test."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from ocpp.v16 import call

from evgate.app import Evgate
from evgate.pricing import Price
from evgate.storage.cdrs import Cdr, CdrStore
from evgate.storage.db import Database, acting_for
from evgate.storage.settlements import (
    SETTLE_AFTER,
    SettlementPart,
    SettlementStore,
    month_before,
)
from support import ocpp_charger, register_charger

NOV = datetime(2024, 11, 1, tzinfo=UTC)
DEC = datetime(2024, 12, 1, tzinfo=UTC)
REPORTS = "/api/v1/settlement-reports"


async def _post(api: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(url, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _member(api: httpx.AsyncClient, partner: int | None, email: str, id_tag: str) -> None:
    """A user with the id tag, a member of ``partner`` (by its accepted invite) if given."""
    user = (await _post(api, "/api/v1/users", {"email": email}))["id"]
    await _post(api, "/api/v1/id-tags", {"idTag": id_tag, "userId": user})
    if partner is not None:
        invite = await _post(api, f"/api/v1/partners/{partner}/invites", {"email": email})
        r = await api.post(f"/api/v1/partner-invites/{invite['id']}/accept", json={"userId": user})
        assert r.status_code == 200, r.text


async def test_a_partners_report_counts_its_members_priced_transactions_in_the_period(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """End to end with a real OCPP charger, priced 0.30/kWh + 20 % tax: the partner's report
    of the period its CDRs are recorded in (from now on) counts its two members' transactions
    stopped in it (10 and 5 kWh) and a member's stopped in 2024 (1 kWh, sent late: the previous
    periods' part), exactly; a non-member's (20 kWh) is not in it."""
    tariff = await _post(api, "/api/v1/tariffs", {
        "name": "Plain", "currency": "EUR", "pricePerKwh": "0.30", "taxPercent": "20",
    })  # fmt: skip
    group = await _post(
        api, "/api/v1/tariff-groups", {"name": "G", "tariffs": [{"tariffId": tariff["id"]}]}
    )
    secret = await register_charger(evgate, api, "CP-1")
    r = await api.patch("/api/v1/chargers/CP-1", json={"tariffGroupId": group["id"]})
    assert r.status_code == 200, r.text
    acme = (await _post(api, "/api/v1/partners", {"name": "Acme"}))["id"]
    await _member(api, acme, "ada@example.com", "ADA")
    await _member(api, acme, "bob@example.com", "BOB")
    await _member(api, None, "carl@example.com", "CARL")
    url = f"ws://127.0.0.1:{evgate.ws_port}/cp/CP-1?auth={secret}"
    # The period: from a second ago (evgate's clock records the CDRs) to tomorrow.
    period_start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    async with ocpp_charger(url, "CP-1") as cp:
        for id_tag, wh, stopped in (
            ("ADA", 10_000, period_start + timedelta(seconds=1)),
            ("BOB", 5_000, period_start + timedelta(seconds=1)),
            ("CARL", 20_000, period_start + timedelta(seconds=1)),
            ("ADA", 1_000, NOV),  # stopped long ago, sent now
        ):
            start = await cp.call(call.StartTransaction(
                connector_id=1, id_tag=id_tag, meter_start=0,
                timestamp=(stopped - timedelta(hours=1)).isoformat(),
            ))  # fmt: skip
            assert start.id_tag_info["status"] == "Accepted"
            await cp.call(call.StopTransaction(
                meter_stop=wh, timestamp=stopped.isoformat(),
                transaction_id=start.transaction_id, id_tag=id_tag,
            ))  # fmt: skip
    period_end = period_start + timedelta(days=1)
    body = {"partnerId": acme, "periodStart": period_start.isoformat(),
            "periodEnd": period_end.isoformat()}  # fmt: skip
    made = (await _post(api, REPORTS, body))["data"]
    assert len(made) == 1
    report = made[0]
    assert {k: report[k] for k in (
        "partnerId", "subOperatorId", "kind", "currency", "transactions", "energyKwh",
        "totalExclTax", "tax", "totalInclTax", "previousPeriods",
    )} == {
        "partnerId": acme, "subOperatorId": None, "kind": "onDemand", "currency": "EUR",
        "transactions": 3, "energyKwh": "16.000",
        "totalExclTax": "4.80", "tax": "0.96", "totalInclTax": "5.76",
        "previousPeriods": {"transactions": 1, "energyKwh": "1.000",
                            "totalExclTax": "0.30", "tax": "0.06", "totalInclTax": "0.36"},
    }  # fmt: skip
    assert report["reportUid"] == f"SR-{report['id']}"
    assert (report["periodStart"], report["periodEnd"]) == (
        period_start.isoformat().replace("+00:00", "Z"),
        period_end.isoformat().replace("+00:00", "Z"),
    )
    assert (await api.get(f"{REPORTS}/{report['id']}")).json() == report
    # On demand again: a new report, the same figures.
    again = (await _post(api, REPORTS, body))["data"]
    assert again[0]["id"] != report["id"] and again[0]["totalInclTax"] == "5.76"
    # The period the ADA transaction stopped in: its CDR was recorded after it, so not there.
    late = {**body, "periodStart": NOV.isoformat(), "periodEnd": DEC.isoformat()}
    assert (await _post(api, REPORTS, late))["data"] == []


async def _a_cdr(
    db: Database,
    charger_id: str,
    tx: int,
    stopped_at: datetime,
    currency: str,
    incl: str,
    recorded: datetime | None = None,
) -> None:
    """A priced CDR of 2 kWh of id tag ``T<tx>``, stopped at ``stopped_at`` and recorded then
    (or at ``recorded``: its stop sent late): ``incl`` with tax (25 %: a fifth of it is tax)."""
    total = Decimal(incl)
    price = Price(
        currency=currency, tariff_id=1, total_excl_tax=total - total / 5,
        total_incl_tax=total, tax=total / 5, tax_percent=Decimal(25), breakdown=(),
        energy_wh=Decimal(2000), charging_minutes=Decimal(60), idle_minutes=Decimal(0),
    )  # fmt: skip
    cdr = Cdr(
        id=f"{charger_id}-{tx}", charger_id=charger_id, charge_point_id=1, transaction_id=tx,
        connector_id=1, id_tag=f"T{tx}", started_at=stopped_at - timedelta(hours=1),
        stopped_at=stopped_at, meter_start_wh=0, meter_stop_wh=2000, energy_wh=2000,
        stop_reason=None, created_at=recorded or stopped_at, price=price,
    )  # fmt: skip
    async with db.pool.acquire() as conn:
        await CdrStore(db).insert(conn, cdr)


async def _sub_operator_with_charger(db: Database, name: str, charger_id: str) -> int:
    sub: int = await db.fetchval("INSERT INTO sub_operators (name) VALUES ($1) RETURNING id", name)
    await db.execute(
        "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ($1, $2, $3)",
        charger_id,
        bytes(32),
        sub,
    )
    return sub


async def test_a_sub_operators_report_counts_its_chargers_in_each_currency(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A sub-operator's report: the priced CDRs of its chargers, not another's nor a CDR
    without a price; two currencies in the period make two reports (one named currency: only
    it; a currency without CDRs: a report of zeros)."""
    assert evgate.db is not None
    db = evgate.db
    sub = await _sub_operator_with_charger(db, "Reseller A", "CP-A")
    await _sub_operator_with_charger(db, "Reseller B", "CP-B")
    await _a_cdr(db, "CP-A", 1, NOV + timedelta(days=1), "EUR", "10.00")
    await _a_cdr(db, "CP-A", 2, NOV + timedelta(days=2), "EUR", "2.50")
    await _a_cdr(db, "CP-A", 3, NOV + timedelta(days=3), "CHF", "5.00")
    await _a_cdr(db, "CP-B", 4, NOV + timedelta(days=1), "EUR", "100.00")
    await _a_cdr(db, "CP-A", 5, NOV - timedelta(seconds=1), "EUR", "7.00")
    await db.execute("UPDATE cdrs SET price = NULL WHERE transaction_id = 2")  # not priced
    await _a_cdr(db, "CP-A", 6, NOV + timedelta(days=4), "EUR", "1.25")
    body = {"subOperatorId": sub, "periodStart": NOV.isoformat(), "periodEnd": DEC.isoformat()}
    made = (await _post(api, REPORTS, body))["data"]
    assert [
        (r["subOperatorId"], r["partnerId"], r["currency"], r["transactions"], r["energyKwh"],
         r["totalExclTax"], r["tax"], r["totalInclTax"])
        for r in sorted(made, key=lambda r: r["currency"])
    ] == [
        (sub, None, "CHF", 1, "2.000", "4.00", "1.00", "5.00"),
        (sub, None, "EUR", 2, "4.000", "9.00", "2.25", "11.25"),
    ]  # fmt: skip
    only = (await _post(api, REPORTS, {**body, "currency": "CHF"}))["data"]
    assert [(r["currency"], r["totalInclTax"]) for r in only] == [("CHF", "5.00")]
    zero = (await _post(api, REPORTS, {**body, "currency": "JPY"}))["data"]
    assert [(r["currency"], r["transactions"], r["totalInclTax"]) for r in zero] == [
        ("JPY", 0, "0")
    ]
    # Nothing in the period and no currency named: no report.
    empty = {**body, "periodStart": "2020-01-01T00:00:00Z", "periodEnd": "2020-02-01T00:00:00Z"}
    assert (await _post(api, REPORTS, empty))["data"] == []
    listed = (await api.get(REPORTS, params={"subOperatorId": sub})).json()["data"]
    assert [r["id"] for r in listed] == sorted(r["id"] for r in [*made, *only, *zero])
    assert (await api.get(REPORTS, params={"partnerId": 1})).json()["data"] == []


async def test_bad_requests_have_a_defined_answer(api: httpx.AsyncClient) -> None:
    """422 problem+json: both owners or neither, an empty or reversed period, a time without
    an offset, an unknown partner or sub-operator, an unknown field; 404 for an unknown
    report."""
    acme = (await _post(api, "/api/v1/partners", {"name": "Acme"}))["id"]
    period = {"periodStart": "2024-11-01T00:00:00Z", "periodEnd": "2024-12-01T00:00:00Z"}
    for body in (
        {**period},
        {**period, "partnerId": acme, "subOperatorId": 1},
        {"partnerId": acme, "periodStart": "2024-12-01T00:00:00Z",
         "periodEnd": "2024-12-01T00:00:00Z"},
        {"partnerId": acme, "periodStart": "2024-12-01T00:00:00Z",
         "periodEnd": "2024-11-01T00:00:00Z"},
        {"partnerId": acme, "periodStart": "2024-11-01T00:00:00", "periodEnd": "2024-12-01"},
        {**period, "partnerId": acme + 1},
        {**period, "subOperatorId": 99},
        {**period, "partnerId": acme, "currency": "eur"},
        {**period, "partnerId": acme, "sessions": 1},
    ):  # fmt: skip
        r = await api.post(REPORTS, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = await api.get(f"{REPORTS}/12345")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await api.post(REPORTS, json={**period, "partnerId": acme})
    assert r.status_code == 201 and r.json()["data"] == []


async def test_the_monthly_pass_makes_each_report_once_across_processes(
    db: Database, database_url: str
) -> None:
    """The pass of December 1st (the clock injected) reports November for every partner and
    sub-operator with priced CDRs in it, one report per currency; two processes running it at
    once, and again later, make each report once, and emit its event once."""
    sub = await _sub_operator_with_charger(db, "Reseller A", "CP-A")
    await db.execute("INSERT INTO chargers (id, secret_digest) VALUES ('CP-OP', $1)", bytes(32))
    acme = await db.fetchval("INSERT INTO partners (name) VALUES ('Acme') RETURNING id")
    idle = await db.fetchval("INSERT INTO partners (name) VALUES ('Idle') RETURNING id")
    user = await db.fetchval(
        "INSERT INTO users (email, partner_id) VALUES ('a@b.io', $1) RETURNING id", acme
    )
    for tx in (1, 2, 3):
        await db.execute("INSERT INTO id_tags (id_tag, user_id) VALUES ($1, $2)", f"T{tx}", user)
    await _a_cdr(db, "CP-OP", 1, NOV + timedelta(days=5), "EUR", "3.00")
    await _a_cdr(db, "CP-A", 2, NOV + timedelta(days=6), "CHF", "4.00")  # acme's and sub's
    await _a_cdr(db, "CP-OP", 3, DEC + timedelta(days=1), "EUR", "9.00")  # December's
    await _a_cdr(db, "CP-A", 4, NOV + timedelta(days=7), "EUR", "6.00")  # no user: sub's only
    # Not yet at 00:05: a stop received before midnight may still be committing.
    assert await SettlementStore(db, clock=lambda: DEC + timedelta(minutes=5)).settle_due() == 0
    at = DEC + SETTLE_AFTER
    assert month_before(at) == (NOV, DEC)
    assert month_before(datetime(2025, 1, 1, tzinfo=UTC)) == (DEC, datetime(2025, 1, 1, tzinfo=UTC))
    other = Database(database_url, pool_size=2)  # a second process's pool
    await other.open(migrate=False)
    try:
        one, two = SettlementStore(db, clock=lambda: at), SettlementStore(other, clock=lambda: at)
        made = await asyncio.gather(one.settle_due(), two.settle_due())
        assert sum(made) == 4, made
        assert await one.settle_due() == 0  # this process did the month
        assert await SettlementStore(other, clock=lambda: at).settle_due() == 0  # a restart
    finally:
        await other.close()
    rows = await db.fetch(
        "SELECT partner_id, sub_operator_id, kind, currency, transactions, total_incl_tax"
        " FROM settlement_reports ORDER BY partner_id NULLS LAST, currency"
    )
    assert [tuple(r) for r in rows] == [
        (acme, None, "monthly", "CHF", 1, Decimal("4.0000")),
        (acme, None, "monthly", "EUR", 1, Decimal("3.0000")),
        (None, sub, "monthly", "CHF", 1, Decimal("4.0000")),
        (None, sub, "monthly", "EUR", 1, Decimal("6.0000")),
    ]
    assert idle not in {r["partner_id"] for r in rows}
    events = await db.fetch(
        "SELECT e->>'partnerId', e->>'currency' FROM"
        " (SELECT convert_from(payload, 'UTF8')::jsonb AS e FROM outbox"
        "  WHERE event = 'settlementReport.created') o ORDER BY 2"
    )
    assert [tuple(e) for e in events] == [(str(acme), "CHF"), (str(acme), "EUR")]


async def test_a_tenant_sees_only_its_own_reports(db: Database) -> None:
    """Row-level security: a sub-operator's queries see its own reports, never another's nor a
    partner's."""
    a = await _sub_operator_with_charger(db, "A", "CP-A")
    b = await _sub_operator_with_charger(db, "B", "CP-B")
    acme = await db.fetchval("INSERT INTO partners (name) VALUES ('Acme') RETURNING id")
    store = SettlementStore(db)
    for owner in ({"sub_operator_id": a}, {"sub_operator_id": b}, {"partner_id": acme}):
        await store.create(NOV, DEC, currency="EUR", **owner)
    assert len(await store.page()) == 3
    with acting_for(a):
        assert [(r.sub_operator_id, r.partner_id) for r in await store.page()] == [(a, None)]
        assert len(await store.page(partner_id=acme)) == 0


async def test_a_sub_operator_is_settled_for_the_cdrs_of_its_chargers_when_they_stopped(
    evgate: Evgate, api: httpx.AsyncClient
) -> None:
    """A's two November CDRs stay A's when CP-1 then moves to B and CP-2 is deleted: the
    monthly pass settles them to A, none to B; A's own on-demand report (its tenant's request,
    whose row-level security no longer shows them) counts them too; the CDR names A
    (subOperatorId)."""
    assert evgate.db is not None
    db = evgate.db
    a = await _sub_operator_with_charger(db, "A", "CP-1")
    await db.execute(
        "INSERT INTO chargers (id, secret_digest, sub_operator_id) VALUES ('CP-2', $1, $2)",
        bytes(32),
        a,
    )
    b = await _sub_operator_with_charger(db, "B", "CP-B")
    await _a_cdr(db, "CP-1", 1, NOV + timedelta(days=1), "EUR", "10.00")
    await _a_cdr(db, "CP-2", 2, NOV + timedelta(days=2), "EUR", "2.50")
    await db.execute("UPDATE chargers SET sub_operator_id = $1 WHERE id = 'CP-1'", b)
    await db.execute("DELETE FROM chargers WHERE id = 'CP-2'")
    store = SettlementStore(db, clock=lambda: DEC + timedelta(hours=1))
    assert await store.settle_due() == 1
    rows = await db.fetch(
        "SELECT sub_operator_id, transactions, total_incl_tax FROM settlement_reports"
    )
    assert [tuple(r) for r in rows] == [(a, 2, Decimal("12.5000"))]
    with acting_for(a):
        assert await db.fetchval("SELECT count(*) FROM cdrs") == 0  # out of its sight
        (own,) = await store.create(NOV, DEC, sub_operator_id=a)
        assert (own.sub_operator_id, own.transactions, own.total_incl_tax) == (a, 2, "12.50")
    with acting_for(b):
        assert await store.create(NOV, DEC, sub_operator_id=b) == []
    cdr = (await api.get("/api/v1/cdrs/CP-1-1")).json()
    assert (cdr["subOperatorId"], cdr["partnerId"]) == (a, None)


JAN = datetime(2025, 1, 1, tzinfo=UTC)


async def _monthly(db: Database) -> list[tuple[Any, ...]]:
    """The monthly reports: (owner, period start, transactions, total with tax, the previous
    periods' transactions and total with tax), in the order they were made."""
    rows = await db.fetch(
        "SELECT coalesce(partner_id, sub_operator_id), period_start, transactions,"
        " total_incl_tax, prev_transactions, prev_total_incl_tax FROM settlement_reports"
        " WHERE kind = 'monthly' ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_a_cdr_recorded_after_the_months_pass_is_in_the_next_months_report(
    db: Database,
) -> None:
    """A charger offline at midnight sends its November stop at 00:40 on December 1st, after
    November's pass: December's report settles it as the previous periods' part, beside a
    transaction of December."""
    sub = await _sub_operator_with_charger(db, "A", "CP-A")
    await _a_cdr(db, "CP-A", 1, NOV + timedelta(days=3), "EUR", "10.00")
    assert await SettlementStore(db, clock=lambda: DEC + timedelta(minutes=30)).settle_due() == 1
    late = DEC - timedelta(minutes=2)
    await _a_cdr(db, "CP-A", 2, late, "EUR", "2.50", recorded=DEC + timedelta(minutes=40))
    await _a_cdr(db, "CP-A", 3, DEC + timedelta(days=9), "EUR", "1.25")
    assert await SettlementStore(db, clock=lambda: JAN + timedelta(hours=1)).settle_due() == 1
    assert await _monthly(db) == [
        (sub, NOV, 1, Decimal("10.0000"), 0, Decimal("0.0000")),
        (sub, DEC, 2, Decimal("3.7500"), 1, Decimal("2.5000")),
    ]
    _, december = await SettlementStore(db).page(sub_operator_id=sub)
    assert (december.transactions, december.energy_kwh, december.total_incl_tax) == (
        2,
        "4.000",
        "3.75",
    )
    assert december.previous_periods == SettlementPart(
        transactions=1, energy_kwh="2.000", total_excl_tax="2.00", tax="0.50", total_incl_tax="2.50"
    )


async def test_consecutive_monthly_reports_never_count_a_cdr_twice_nor_miss_one(
    db: Database,
) -> None:
    """CDRs recorded at the edges of November and December (totals 1, 2, 4, 8: a sum names
    its CDRs): each is in exactly one of the two monthly reports, the report of the month it
    was recorded in; an on-demand report of November has the same figures."""
    sub = await _sub_operator_with_charger(db, "A", "CP-A")
    tick = timedelta(microseconds=1)
    for tx, stopped, incl, recorded in (
        (1, NOV, "1.00", NOV),  # November's, from its first instant
        (2, NOV - tick, "2.00", DEC - tick),  # October's stop, November's last instant
        (3, DEC - tick, "4.00", DEC),  # November's stop, recorded at December's start
        (4, DEC, "8.00", JAN - tick),
    ):
        await _a_cdr(db, "CP-A", tx, stopped, "EUR", incl, recorded=recorded)
    await SettlementStore(db, clock=lambda: DEC + timedelta(hours=1)).settle_due()
    await SettlementStore(db, clock=lambda: JAN + timedelta(hours=1)).settle_due()
    assert await _monthly(db) == [
        (sub, NOV, 2, Decimal("3.0000"), 1, Decimal("2.0000")),
        (sub, DEC, 2, Decimal("12.0000"), 1, Decimal("4.0000")),
    ]
    (on_demand,) = await SettlementStore(db).create(NOV, DEC, sub_operator_id=sub)
    assert (on_demand.transactions, on_demand.total_incl_tax) == (2, "3.00")
    assert on_demand.previous_periods.total_incl_tax == "2.00"
