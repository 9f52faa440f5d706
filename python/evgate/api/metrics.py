"""api room: ``GET /metrics`` — the process's metrics in the Prometheus text format.

Open like the docs (see ``security.OPEN_PATHS``): scrapers carry no token, and the figures
name no charger. A serving process has it on its API port; the delivery process
(``evgate deliver``), which has no API, on a port of its own (:func:`metrics_api`).
"""

from __future__ import annotations

from litestar import Litestar, Response, get
from litestar.di import NamedDependency, Provide

from evgate.api.problems import exception_handlers
from evgate.metrics import CONTENT_TYPE, Registry

__all__ = ["metrics", "metrics_api"]

#: The process's metrics, injected as ``registry`` (from ``ApiContext.metrics`` in the API).
Metrics = NamedDependency[Registry]


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics(registry: Metrics) -> Response[str]:
    """Every metric of this process (gateway, writer, dispatcher, ...)."""
    return Response(registry.exposition(), media_type=CONTENT_TYPE)


def _no_database(_: object) -> None:
    """This app reads no database: no request of it is answered 503 for one."""


def metrics_api(registry: Registry) -> Litestar:
    """The whole HTTP API of a process that serves nothing but its metrics: ``GET /metrics``
    (``registry``); any other path 404 and any other method 405, as problem+json."""

    def provide_registry() -> Registry:
        return registry

    return Litestar(
        route_handlers=[metrics],
        dependencies={"registry": Provide(provide_registry, sync_to_thread=False)},
        exception_handlers=exception_handlers(_no_database),
        openapi_config=None,
        debug=False,
        logging_config=None,  # evgate configures logging once, in cli.py
    )
