"""api room: ``GET /metrics`` — the process's metrics in the Prometheus text format.

Open like the docs (see ``security.OPEN_PATHS``): scrapers carry no token, and the figures
name no charger. A serving process has it on its API port; the delivery process
(``evgate deliver``), which has no API, on a port of its own (:func:`metrics_api`).
"""

from __future__ import annotations

from litestar import Litestar, Response, get
from litestar.di import NamedDependency, Provide

from evgate.api.context import unreported
from evgate.api.problems import exception_handlers
from evgate.metrics import CONTENT_TYPE, Registry

__all__ = ["Metrics", "exposition", "metrics_api"]

#: The process's metrics, injected as ``metrics`` (the API's: ``ApiContext.metrics``).
Metrics = NamedDependency[Registry]


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def exposition(metrics: Metrics) -> Response[str]:
    """Every metric of this process (gateway, writer, dispatcher, ...)."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)


def metrics_api(metrics: Registry) -> Litestar:
    """The whole HTTP API of a process that serves nothing but its ``metrics``:
    ``GET /metrics``; any other path 404 and any other method 405, as problem+json."""
    return Litestar(
        route_handlers=[exposition],
        dependencies={"metrics": Provide(lambda: metrics, sync_to_thread=False)},
        exception_handlers=exception_handlers(unreported),
        openapi_config=None,
        debug=False,
        logging_config=None,  # evgate configures logging once, in cli.py
    )
