"""api room: ``/api/v1/cdrs`` — charge detail records, one per ended transaction (the
``cdr.received`` notification names them)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromPath

from evgate.api.context import Ctx
from evgate.events.builders import Cdr

__all__ = ["CdrController"]


class CdrController(Controller):
    path = "/api/v1/cdrs"
    tags = ["cdrs"]

    @get("/{cdr_id:str}", summary="One charge detail record (the id from cdr.received)")
    async def get_cdr(self, ctx: Ctx, cdr_id: FromPath[str]) -> Cdr:
        return Cdr(**await ctx.cdrs.store.get(cdr_id))
