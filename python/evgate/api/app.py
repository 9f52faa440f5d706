"""api room: the Litestar application — routes, OpenAPI document, auth, problem documents.

``create_api`` is called by ``evgate.app`` with the services (an :class:`ApiContext`) and any
route handlers that other rooms contribute.
"""

from __future__ import annotations

from collections.abc import Sequence

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler
from swagger_ui_bundle import swagger_ui_path

import evgate
from evgate.api.certificates import CertificateController
from evgate.api.chargers import ChargerController
from evgate.api.commands import BulkCommandController, CommandController, CommandStatusController
from evgate.api.context import ApiContext
from evgate.api.dashboard import DASHBOARD_ROUTES
from evgate.api.fleet import FLEET_ROUTES
from evgate.api.inputs import check_request
from evgate.api.installations import InstallationController
from evgate.api.metrics import exposition
from evgate.api.openapi import document_problems
from evgate.api.problems import exception_handlers
from evgate.api.security import (
    OPEN_PATHS,
    TenantMiddleware,
    make_auth_middleware,
    operator_guard,
    scope_guard,
)
from evgate.api.tokens import TokenController, token_in_use

__all__ = ["create_api"]

_ASSETS = "/api/docs/assets"


def create_api(
    ctx: ApiContext,
    route_handlers: Sequence[ControllerRouterHandler] = (),
    open_route_handlers: Sequence[ControllerRouterHandler] = (),
    operator_route_handlers: Sequence[ControllerRouterHandler] = (),
) -> Litestar:
    """Build the operator API.

    Args:
        ctx: the services the routes use (injected as ``ctx``).
        route_handlers: more authenticated routes (controllers or routers) from other rooms.
        open_route_handlers: routes without authentication (``/metrics``).
        operator_route_handlers: authenticated routes over what no sub-operator owns (users,
            partners, plans...): a sub-operator's token gets 403 there (``operator_guard``).
    """

    async def provide_ctx() -> ApiContext:
        return ctx

    secured = Router(
        path="/",
        route_handlers=[
            ChargerController,
            CertificateController,
            CommandController,
            CommandStatusController,
            BulkCommandController,
            InstallationController,
            TokenController,
            token_in_use,
            *FLEET_ROUTES,
            *route_handlers,
            Router(path="/", route_handlers=operator_route_handlers, guards=[operator_guard]),
        ],
        guards=[scope_guard],
        security=[{"bearer": []}],
    )
    # Swagger UI's files come from a pinned wheel: nothing is fetched from a CDN at run time.
    docs_assets = create_static_files_router(
        path=_ASSETS, directories=[swagger_ui_path], include_in_schema=False
    )
    openapi = OpenAPIConfig(
        title="evgate operator API",
        version=evgate.__version__,
        description="Chargers, transactions, commands to chargers and notifications.",
        path="/api",
        render_plugins=[
            JsonRenderPlugin(path="/openapi.json"),
            SwaggerRenderPlugin(
                path="/docs",
                js_url=f"{_ASSETS}/swagger-ui-bundle.js",
                css_url=f"{_ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{_ASSETS}/swagger-ui-standalone-preset.js",
                favicon="",  # the default one is on a CDN
            ),
        ],
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
        ),
    )
    auth = DefineMiddleware(
        make_auth_middleware(ctx.tokens.grant_of, ctx.bootstrap_digest), exclude=OPEN_PATHS
    )
    app = Litestar(
        route_handlers=[
            secured,
            docs_assets,
            exposition,
            *DASHBOARD_ROUTES,
            *open_route_handlers,
        ],
        dependencies={
            "ctx": Provide(provide_ctx, use_cache=True),
            "metrics": Provide(lambda: ctx.metrics, sync_to_thread=False),
        },
        middleware=[auth, TenantMiddleware()],
        exception_handlers=exception_handlers(ctx.database_unavailable),
        before_request=check_request,
        openapi_config=openapi,
        debug=False,
        logging_config=None,  # evgate configures logging once, in cli.py
    )
    document_problems(app)
    return app
