"""storage room: settlement reports — what a partner or a sub-operator is settled for a period,
from the priced CDRs recorded in it (``settlement_reports``, migration 0021).

A partner's CDRs are those billed to it (``cdrs.partner_id``: its members' transactions); a
sub-operator's are those of the chargers it owned when they stopped (``cdrs.sub_operator_id``,
kept when a charger changes hands or is deleted). A tenant's own report is computed as the
operator (its row-level security on ``cdrs`` follows the charger's current owner), once the
owner it names is checked to be itself. Only priced CDRs count (a CDR without a tariff has no
price to settle, which is not a price of 0).

A report of [start, end) settles the CDRs *recorded* in it (``cdrs.created_at``: when evgate
learned of the stop), not those stopped in it: a charger offline at the month's end sends its
StopTransaction later, and its CDR is settled by the report of the period it arrived in, as
the catalog's "previous periods" part (the CDRs recorded in the period but stopped before its
start: ``previous_periods``, a part of the totals). So consecutive periods settle every CDR
once: none is missed, none counted twice. On-demand reports follow the same rule.

The figures are exact sums (``numeric``) of the CDRs' prices, one report per currency: evgate
has no exchange rates, so a period whose CDRs are in two currencies gets two reports. A report
is made:

* on demand (:meth:`SettlementStore.create`): any period, as often as asked, each a new report
  with the figures as of its making;
* monthly (:meth:`SettlementStore.settle_month`, run by the expiry task through
  :meth:`SettlementStore.settle_due`): the previous calendar month (UTC) for every owner with
  priced CDRs recorded in it, :data:`SETTLE_AFTER` past the month's end (a stop received just
  before it may still be committing), once per owner and currency across every process (a
  unique index and ``ON CONFLICT DO NOTHING``: the process whose insert made the row emits its
  event).

A partner's report emits settlementReport.created in its transaction. A sub-operator's emits
nothing: the catalog's payload requires ``partnerId`` (an integer, not nullable), and a
sub-operator is no partner; its reports are read from the API.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

import asyncpg
import msgspec

from evgate.events.builders import settlement_report_created
from evgate.storage.db import Database, acting_for, tenant
from evgate.storage.errors import BadReference, NotFound
from evgate.storage.money import format_amount
from evgate.storage.outbox import insert_outbox

__all__ = ["SETTLE_AFTER", "SettlementPart", "SettlementReport", "SettlementStore", "month_before"]

ReportKind = Literal["onDemand", "monthly"]

#: How long after a month's end its monthly reports are made: a CDR's ``created_at`` is when
#: its stop was received, and a stop received just before midnight may commit a little after.
SETTLE_AFTER = timedelta(minutes=15)


class SettlementPart(msgspec.Struct, rename="camel", kw_only=True):
    """A part of a report's CDRs: how many, their energy (kWh, a decimal string, Wh exact) and
    amounts (decimal strings with the currency's minor unit)."""

    transactions: int
    energy_kwh: str
    total_excl_tax: str
    tax: str
    total_incl_tax: str


class SettlementReport(msgspec.Struct, rename="camel", kw_only=True):
    """A settlement report, as ``/api/v1/settlement-reports`` shows it: amounts as decimal
    strings with the currency's minor unit, energy in kWh as a decimal string (Wh exact)."""

    id: int
    # Stable and unique: "SR-" and the id (what an invoice or a consumer may quote).
    report_uid: str
    # Exactly one of the two: whose report it is.
    partner_id: int | None
    sub_operator_id: int | None
    kind: ReportKind
    # The period [periodStart, periodEnd): CDRs recorded at or after its start, before its end.
    period_start: datetime
    period_end: datetime
    currency: str
    # How many priced CDRs (transactions) it settles, their energy and amounts: all of them.
    transactions: int
    energy_kwh: str
    total_excl_tax: str
    tax: str
    total_incl_tax: str
    # Of those, the CDRs stopped before the period (recorded late: the catalog's "sessions
    # that happened in previous periods"); the rest stopped in it.
    previous_periods: SettlementPart
    created_at: datetime


_FIGURES = "transactions, energy_wh, total_excl_tax, tax, total_incl_tax"
_PREVIOUS = "prev_transactions, prev_energy_wh, prev_total_excl_tax, prev_tax, prev_total_incl_tax"
_COLUMNS = (
    "id, partner_id, sub_operator_id, kind, period_start, period_end, currency,"
    f" {_FIGURES}, {_PREVIOUS}, created_at"
)
_INSERT = (
    "INSERT INTO settlement_reports (partner_id, sub_operator_id, kind, period_start,"
    f" period_end, currency, {_FIGURES}, {_PREVIOUS})"
)
# The priced CDRs recorded in [$1, $2) per owner and currency, made reports of kind $6: a
# partner's ($3; none for a sub-operator's report), a sub-operator's ($4; none for a
# partner's), or every owner's (both null: the monthly pass); only currency $5 if it is not
# null. Those stopped before $1 are also summed apart (the previous periods'). Monthly reports
# made already (by another process, or an earlier run) are skipped by their unique indexes.
_SETTLE = f"""
WITH recorded AS (
    SELECT c.partner_id, NULL::bigint AS sub_operator_id, c.price, c.energy_wh, c.stopped_at
      FROM cdrs c
     WHERE c.partner_id IS NOT NULL AND c.price IS NOT NULL
       AND c.created_at >= $1 AND c.created_at < $2
       AND $4::bigint IS NULL AND ($3::bigint IS NULL OR c.partner_id = $3)
    UNION ALL
    SELECT NULL::bigint, c.sub_operator_id, c.price, c.energy_wh, c.stopped_at
      FROM cdrs c
     WHERE c.sub_operator_id IS NOT NULL AND c.price IS NOT NULL
       AND c.created_at >= $1 AND c.created_at < $2
       AND $3::bigint IS NULL AND ($4::bigint IS NULL OR c.sub_operator_id = $4)
), priced AS (
    SELECT partner_id, sub_operator_id, price->>'currency' AS currency, energy_wh,
           (price->>'totalExclTax')::numeric AS excl, (price->>'tax')::numeric AS tax,
           (price->>'totalInclTax')::numeric AS incl, stopped_at < $1 AS previous
      FROM recorded
)
{_INSERT}
SELECT partner_id, sub_operator_id, $6, $1, $2, currency,
       count(*), sum(energy_wh), sum(excl), sum(tax), sum(incl),
       count(*) FILTER (WHERE previous),
       coalesce(sum(energy_wh) FILTER (WHERE previous), 0),
       coalesce(sum(excl) FILTER (WHERE previous), 0),
       coalesce(sum(tax) FILTER (WHERE previous), 0),
       coalesce(sum(incl) FILTER (WHERE previous), 0)
  FROM priced
 WHERE $5::text IS NULL OR currency = $5
 GROUP BY partner_id, sub_operator_id, currency
ON CONFLICT DO NOTHING
RETURNING {_COLUMNS}
"""
_ZERO = (
    f"{_INSERT} VALUES ($1, $2, 'onDemand', $3, $4, $5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
    f" RETURNING {_COLUMNS}"
)


def _kwh(wh: int) -> str:
    return str(Decimal(wh).scaleb(-3).quantize(Decimal("0.001")))


def _report(row: asyncpg.Record) -> SettlementReport:
    currency = row["currency"]
    return SettlementReport(
        id=row["id"],
        report_uid=f"SR-{row['id']}",
        partner_id=row["partner_id"],
        sub_operator_id=row["sub_operator_id"],
        kind=row["kind"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        currency=currency,
        transactions=row["transactions"],
        energy_kwh=_kwh(row["energy_wh"]),
        total_excl_tax=format_amount(row["total_excl_tax"], currency),
        tax=format_amount(row["tax"], currency),
        total_incl_tax=format_amount(row["total_incl_tax"], currency),
        previous_periods=SettlementPart(
            transactions=row["prev_transactions"],
            energy_kwh=_kwh(row["prev_energy_wh"]),
            total_excl_tax=format_amount(row["prev_total_excl_tax"], currency),
            tax=format_amount(row["prev_tax"], currency),
            total_incl_tax=format_amount(row["prev_total_incl_tax"], currency),
        ),
        created_at=row["created_at"],
    )


def month_before(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) before the one of ``now``: its start and end (the start of
    ``now``'s month)."""
    end = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (
        end.replace(year=end.year - 1, month=12)
        if end.month == 1
        else end.replace(month=end.month - 1)
    )
    return start, end


class SettlementStore:
    """``/api/v1/settlement-reports`` and the monthly pass.

    Args:
        clock: now (UTC); which month the monthly pass settles (a test's chosen month).
    """

    def __init__(self, db: Database, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))
        # The start of the last month this process settled (settle_due skips it until the
        # next month: one aggregate query per process and month, not one per run).
        self._settled: datetime | None = None

    async def create(
        self,
        period_start: datetime,
        period_end: datetime,
        *,
        partner_id: int | None = None,
        sub_operator_id: int | None = None,
        currency: str | None = None,
    ) -> list[SettlementReport]:
        """Make the reports of one owner (exactly one of ``partner_id``, ``sub_operator_id``)
        for [period_start, period_end): one per currency of its priced CDRs recorded in it (as
        the monthly reports: those stopped before it are its previous periods' part), or only
        ``currency``'s (a report of zeros if it has none in it). None if it has no priced CDRs
        and no currency is named. Acting for a sub-operator (a tenant's request): only its
        own reports.

        Raises:
            ValueError: not exactly one owner, or the period ends at or before its start.
            BadReference: no such partner or sub-operator (a tenant's request: any owner but
                itself).
        """
        if (partner_id is None) == (sub_operator_id is None):
            raise ValueError("name exactly one of partnerId and subOperatorId")
        if period_end <= period_start:
            raise ValueError("periodEnd must be after periodStart")
        acting = tenant()
        noun, table, owner = (
            ("partner", "partners", partner_id)
            if partner_id is not None
            else ("sub-operator", "sub_operators", sub_operator_id)
        )
        if acting is not None and sub_operator_id != acting:
            # A partner's or another tenant's: as absent to a tenant as an unknown one (its
            # row-level security hides them too).
            raise BadReference(f"no {noun} {owner}")
        # As the operator, a tenant's own report too: its CDRs are those recorded as its own
        # (cdrs.sub_operator_id), whereas its row-level security on cdrs shows those of the
        # chargers it owns now (a charger it has since given away or deleted took its CDRs out
        # of its sight, not out of its settlement). Checked above: the owner is the tenant.
        with acting_for(None):
            pool = self.db.pool
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1", owner) is None:
                raise BadReference(f"no {noun} {owner}")
            rows = await conn.fetch(
                _SETTLE, period_start, period_end, partner_id, sub_operator_id, currency, "onDemand"
            )
            if not rows and currency is not None:
                rows = [
                    await conn.fetchrow(
                        _ZERO, partner_id, sub_operator_id, period_start, period_end, currency
                    )
                ]
            return await _recorded(conn, rows)

    async def settle_month(self, start: datetime, end: datetime) -> list[SettlementReport]:
        """The monthly pass for the month [start, end): a report per owner and currency with
        priced CDRs recorded in it, but those made already (by any process); the reports it
        made."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_SETTLE, start, end, None, None, None, "monthly")
            return await _recorded(conn, rows)

    async def settle_due(self) -> int:
        """The monthly pass for the last month ended :data:`SETTLE_AFTER` ago, unless this
        process made it already; how many reports it made (for the expiry task: it runs again
        while this is above zero, and then this process skips the month)."""
        start, end = month_before(self.clock() - SETTLE_AFTER)
        if self._settled == start:
            return 0
        made = await self.settle_month(start, end)
        self._settled = start
        return len(made)

    async def get(self, report_id: int) -> SettlementReport:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM settlement_reports WHERE id = $1", report_id
        )
        if row is None:
            raise NotFound(f"no settlement report {report_id}")
        return _report(row)

    async def page(
        self,
        after: int | None = None,
        limit: int = 100,
        *,
        partner_id: int | None = None,
        sub_operator_id: int | None = None,
    ) -> list[SettlementReport]:
        """Reports in id order (keyset pagination), only a partner's or a sub-operator's if
        named."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM settlement_reports"
            " WHERE ($1::bigint IS NULL OR id > $1)"
            " AND ($2::bigint IS NULL OR partner_id = $2)"
            " AND ($3::bigint IS NULL OR sub_operator_id = $3)"
            " ORDER BY id LIMIT $4",
            after,
            partner_id,
            sub_operator_id,
            limit,
        )
        return [_report(r) for r in rows]


async def _recorded(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[SettlementReport]:
    """``rows`` just inserted as reports (in id order), with settlementReport.created for each
    partner's, on ``conn`` in their transaction."""
    reports = sorted((_report(r) for r in rows), key=lambda r: r.id)
    await insert_outbox(
        conn, [settlement_report_created(r) for r in reports if r.partner_id is not None]
    )
    return reports
