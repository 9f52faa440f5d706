"""api room: the operator dashboard's files, served at ``/`` on the API port.

The dashboard is three hand-written files in ``api/dashboard/`` (``index.html``, ``app.js``,
``style.css``), shipped in the package: no build step, no CDN, no dependency. They are open
(no token needed to load them); everything they show comes from the API with the token the
operator signs in with, which the page keeps in the browser's session storage and sends as
the ``Authorization`` header, never in a URL. The page's Content-Security-Policy allows its
own origin only.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

__all__ = ["DASHBOARD_ROUTES"]

FILES = Path(__file__).with_name("dashboard")

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@get("/", include_in_schema=False, sync_to_thread=False)
def index() -> Response[bytes]:
    """The dashboard's page (it loads its script and style from ``/dashboard/``)."""
    return Response(
        (FILES / "index.html").read_bytes(), media_type="text/html; charset=utf-8", headers=_HEADERS
    )


_assets = create_static_files_router(
    path="/dashboard",
    directories=[FILES],
    name="dashboard",
    include_in_schema=False,
)

#: The dashboard's open routes (``security.OPEN_PATHS`` names their paths).
DASHBOARD_ROUTES: list[ControllerRouterHandler] = [index, _assets]
