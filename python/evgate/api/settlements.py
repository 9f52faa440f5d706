"""api room: settlement reports (issue 20) — what a partner or a sub-operator is settled for a
period, from the priced CDRs recorded in it (``storage/settlements.py``; those stopped before
it are its ``previousPeriods`` part).

* ``POST /api/v1/settlement-reports`` ``{"partnerId" | "subOperatorId", "periodStart",
  "periodEnd", "currency"?}``: 201 ``{"data": [reports]}``, one per currency of the owner's
  priced CDRs recorded in [periodStart, periodEnd) (only ``currency``'s if named: a report of
  zeros if it has none; no report at all if it has none and no currency is named). 422 for both or
  neither owner, a period ending at or before its start, a time without an offset, an unknown
  partner or sub-operator (an id in a body that names nothing, as elsewhere in the API).
* ``GET /api/v1/settlement-reports`` (keyset pagination; ``partnerId``, ``subOperatorId``
  filters) and ``GET /api/v1/settlement-reports/{id}``.

The monthly reports are made by the expiry task (``SettlementStore.settle_due``). Their service
is ``ApiContext.accounts.settlements``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.params import JSONBody, QueryParameter

from evgate.api.bounds import JSON_INT_MAX, BigintCursor, BigintId, BodyBigintId
from evgate.api.context import Ctx
from evgate.api.inputs import aware
from evgate.api.pagination import Page, page_of
from evgate.api.problems import Unprocessable
from evgate.storage.settlements import SettlementReport

__all__ = ["ROUTES", "SettlementReportController"]

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
Limit = Annotated[int, QueryParameter(ge=1, le=1000)]


class ReportCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    # Exactly one of the two.
    partner_id: BodyBigintId | None = None
    sub_operator_id: BodyBigintId | None = None
    period_start: datetime
    period_end: datetime
    currency: Currency | None = None


class Reports(msgspec.Struct):
    """The reports one request made (one per currency)."""

    data: list[SettlementReport]


class SettlementReportController(Controller):
    path = "/api/v1/settlement-reports"
    tags = ["settlement reports"]

    @post(
        "/",
        status_code=201,
        summary="Make a partner's or a sub-operator's settlement reports for a period (one per"
        " currency)",
    )
    async def create(self, ctx: Ctx, data: JSONBody[ReportCreate]) -> Reports:
        start = aware("periodStart", data.period_start)
        end = aware("periodEnd", data.period_end)
        try:
            made = await ctx.accounts.settlements.create(
                start,
                end,
                partner_id=data.partner_id,
                sub_operator_id=data.sub_operator_id,
                currency=data.currency,
            )
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None
        return Reports(data=made)

    @get("/", summary="List settlement reports in id order (keyset pagination)")
    async def list_reports(
        self,
        ctx: Ctx,
        after: BigintCursor = None,
        limit: Limit = 100,
        partner_id: Annotated[
            int | None, QueryParameter(name="partnerId", ge=1, le=JSON_INT_MAX)
        ] = None,
        sub_operator_id: Annotated[
            int | None, QueryParameter(name="subOperatorId", ge=1, le=JSON_INT_MAX)
        ] = None,
    ) -> Page[SettlementReport]:
        items = await ctx.accounts.settlements.page(
            after, limit, partner_id=partner_id, sub_operator_id=sub_operator_id
        )
        return page_of(items, limit, lambda r: r.id)

    @get("/{report_id:int}", summary="One settlement report")
    async def get_report(self, ctx: Ctx, report_id: BigintId) -> SettlementReport:
        return await ctx.accounts.settlements.get(report_id)


#: The controllers ``app.py`` passes to ``create_api``.
ROUTES = [SettlementReportController]
