"""api room: errors as RFC 9457 problem documents (``application/problem+json``).

Handlers raise :class:`ApiError` subclasses (or let typed domain errors through, which are
mapped here); nothing else reaches the client, so no stack trace or internal text leaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)

from evgate.storage.errors import (
    AlreadyExists,
    BadReference,
    DatabaseUnavailable,
    InsufficientBalance,
    InUse,
    NotFound,
    NotPermitted,
    ValueRefused,
    is_server_away,
)

__all__ = ["PROBLEM_JSON", "ApiError", "Conflict", "Unprocessable", "exception_handlers"]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Seconds a client is asked to wait (``Retry-After``) while the database is unavailable.
RETRY_AFTER_UNAVAILABLE = 5

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """An error with its HTTP status, a ``detail`` for the client and optional extra members."""

    status = 500

    def __init__(
        self,
        detail: str,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers = headers
        self.extra = extra


class Conflict(ApiError):
    status = 409


class Unprocessable(ApiError):
    status = 422


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[bytes]:
    body = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="evgate"'}
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return problem(exc.status, exc.detail, headers=exc.headers, **exc.extra)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    # Litestar raises this for a body that is not JSON (400), for values of the wrong type or
    # out of their documented range (422: understood, but cannot be processed), and for a path
    # whose id is out of range (404: no resource can have that id; see bounds.py).
    errors = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    detail = "; ".join(f"{e.get('key', 'body')}: {e.get('message')}" for e in errors) or str(
        exc.detail
    )
    if errors and all(e.get("source") == "path" for e in errors):
        return problem(404, f"not found ({detail})")
    status = 400 if "malformed" in detail.lower() or "decode" in detail.lower() else 422
    return problem(status, detail)


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code >= 500:
        log.error("HTTP %d: %s", exc.status_code, exc.detail)
        return problem(exc.status_code, "internal error")
    # 405 carries Allow (RFC 9110), set by Litestar's router.
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


def _not_found(_: Request[Any, Any, Any], exc: NotFound) -> Response[bytes]:
    return problem(404, str(exc))


def _exists(_: Request[Any, Any, Any], exc: AlreadyExists) -> Response[bytes]:
    return problem(409, str(exc))


def _in_use(_: Request[Any, Any, Any], exc: InUse | InsufficientBalance) -> Response[bytes]:
    return problem(409, str(exc))


def _not_permitted(request: Request[Any, Any, Any], exc: NotPermitted) -> Response[bytes]:
    # Row-level security's refusal: the same answer whether or not the sub-operator named
    # exists, so that it tells a tenant nothing about others.
    log.info("%s %s refused by row-level security: %s", request.method, request.url.path, exc)
    return problem(403, "a sub-operator's token may only write its own sub-operator's resources")


def _bad_reference(_: Request[Any, Any, Any], exc: BadReference) -> Response[bytes]:
    return problem(422, str(exc))


# The data exceptions a request's own values cause: a text with U+0000 (22021, 22P05 in
# jsonb), too long (22001), a number or a time out of range (22003, 22008). The others of
# class 22 (a division by zero, a bad cast) would be evgate's SQL at fault: 500.
_REQUEST_VALUES = {"22021", "22P05", "22001", "22003", "22008"}


def _unavailable(
    reported: Callable[[DatabaseUnavailable], None],
) -> Callable[[Request[Any, Any, Any], DatabaseUnavailable], Response[bytes]]:
    def unavailable(request: Request[Any, Any, Any], exc: DatabaseUnavailable) -> Response[bytes]:
        # An outage is logged once by the components that see it go and come back, not per
        # request: the process's view of the database learns of it (an API may be the first,
        # or the only one, to meet it), whose log says it once.
        log.debug("%s %s: %s", request.method, request.url.path, exc)
        if is_server_away(exc):
            reported(exc)
        return problem(
            503,
            "the database is unavailable; retry later",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )

    return unavailable


def _unstorable(request: Request[Any, Any, Any], exc: ValueRefused) -> Response[bytes]:
    if exc.sqlstate not in _REQUEST_VALUES:
        return _internal(request, exc)
    log.warning("a request's value refused by PostgreSQL: %s", exc)
    return problem(422, f"a value cannot be stored (SQLSTATE {exc.sqlstate})")


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error")


def exception_handlers(
    database_unavailable: Callable[[DatabaseUnavailable], None],
) -> dict[type[Exception] | int, Any]:
    """The API's error mapping.

    Args:
        database_unavailable: told of each request answered 503 because the database was
            unavailable (``ApiContext.database_unavailable``).
    """
    return {
        ApiError: _api_error,
        ValidationException: _validation,
        NotAuthorizedException: _http,
        PermissionDeniedException: _http,
        NotFoundException: _http,
        MethodNotAllowedException: _http,
        HTTPException: _http,
        NotFound: _not_found,
        AlreadyExists: _exists,
        InUse: _in_use,
        InsufficientBalance: _in_use,
        BadReference: _bad_reference,
        NotPermitted: _not_permitted,
        ValueRefused: _unstorable,
        DatabaseUnavailable: _unavailable(database_unavailable),
        Exception: _internal,
    }
