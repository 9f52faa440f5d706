"""api room: bearer-token authentication and scopes.

Every API route needs ``Authorization: Bearer <token>``; the token's SHA-256 digest is looked
up (tokens are stored as digests only). The bootstrap token (``EVGATE_BOOTSTRAP_TOKEN``) is no
row: each process compares it with the digest of its own setting, so it is valid exactly where
it is configured, and no other process can revoke it. Scope ``read`` may use safe methods;
``admin`` may do everything. The OpenAPI document, the interactive docs, ``/metrics`` and the
dashboard's files (``/``, ``/dashboard/``) are open.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.types import ASGIApp, Receive, Scope, Send

from evgate.credentials import digest
from evgate.storage.db import acting_for
from evgate.storage.tokens import Grant

__all__ = [
    "OPEN_PATHS",
    "Principal",
    "TenantMiddleware",
    "TokenLookup",
    "admin_guard",
    "make_auth_middleware",
    "operator_guard",
    "scope_guard",
]

# The dashboard's page and files are open too (api/dashboard.py): what they show needs a token.
OPEN_PATHS = ["^/api/docs", "^/api/openapi", "^/metrics", "^/api/schema", "^/$", "^/dashboard/"]

TokenLookup = Callable[[bytes], Awaitable[Grant | None]]


class Principal(msgspec.Struct, frozen=True):
    """Who made an API request: the token's id (None for the bootstrap token), scope, and the
    sub-operator it acts for (None: the operator)."""

    token_id: int | None
    scope: str
    sub_operator_id: int | None = None


_BOOTSTRAP = Principal(token_id=None, scope="admin")


def make_auth_middleware(
    lookup: TokenLookup, bootstrap_digest: bytes | None = None
) -> type[AbstractAuthenticationMiddleware]:
    """Build the middleware class that resolves bearer tokens with ``lookup(digest)``.

    Args:
        lookup: the stored tokens' (id, scope) by digest, or None.
        bootstrap_digest: the digest of this process's ``EVGATE_BOOTSTRAP_TOKEN`` (an admin
            token checked in memory, before any lookup), or None when it is unset.
    """

    class BearerAuth(AbstractAuthenticationMiddleware):
        async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            header = connection.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthorizedException("missing bearer token (Authorization: Bearer ...)")
            presented = digest(token.strip())
            if bootstrap_digest is not None and hmac.compare_digest(presented, bootstrap_digest):
                return AuthenticationResult(user=_BOOTSTRAP, auth=None)
            found = await lookup(presented)
            if found is None:
                raise NotAuthorizedException("unknown or revoked API token")
            principal = Principal(found.token_id, found.scope, found.sub_operator_id)
            return AuthenticationResult(user=principal, auth=None)

    return BearerAuth


class TenantMiddleware(ASGIMiddleware):
    """Runs the request acting for its token's sub-operator (``storage.db.acting_for``): its
    queries see only the tenant's rows, by PostgreSQL's row-level security. After the bearer
    authentication, which puts the Principal in the scope."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        principal = scope.get("user")
        sub_operator = principal.sub_operator_id if isinstance(principal, Principal) else None
        with acting_for(sub_operator):
            await next_app(scope, receive, send)


_SAFE = {"GET", "HEAD", "OPTIONS"}


def _principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("missing bearer token")
    return principal


def scope_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Let ``read`` tokens use safe methods only; ``admin`` tokens may do everything."""
    principal = _principal(connection)
    if (
        principal.scope != "admin"
        and isinstance(connection, Request)
        and (connection.method not in _SAFE)
    ):
        raise PermissionDeniedException("this token's scope is 'read'; 'admin' is needed")


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Let only ``admin`` tokens in, whatever the method (routes that manage tokens)."""
    if _principal(connection).scope != "admin":
        raise PermissionDeniedException("this token's scope is 'read'; 'admin' is needed")


def operator_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Let only the operator's tokens in (routes over what no sub-operator owns: users,
    partners, plans, sub-operators' changes...): a token scoped to a sub-operator gets 403.
    The database would show such a token nothing there anyway (no row-level security policy
    opens those tables to tenants); this says so instead of an empty list."""
    if _principal(connection).sub_operator_id is not None:
        raise PermissionDeniedException("a sub-operator's token may not use this route")
