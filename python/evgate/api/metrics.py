"""api room: ``GET /metrics`` — the process's metrics in the Prometheus text format.

Open like the docs (see ``security.OPEN_PATHS``): scrapers carry no token, and the figures
name no charger.
"""

from __future__ import annotations

from litestar import Response, get

from evgate.api.context import Ctx
from evgate.metrics import CONTENT_TYPE

__all__ = ["metrics"]


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics(ctx: Ctx) -> Response[str]:
    """Every metric of this process (gateway, writer, dispatcher, ...)."""
    return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE)
