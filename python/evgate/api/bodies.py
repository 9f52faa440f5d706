"""api room: what a JSON request body must be before a route decodes it into its type.

JSON text in UTF-8 (RFC 8259: the only encoding for JSON between systems), nested at most
:data:`MAX_DEPTH` deep (evgate's deepest body, a charging profile in a command, has 5 levels).
msgspec raises ``UnicodeDecodeError`` for bytes that are not UTF-8 and ``RecursionError`` for
deep nesting, which Litestar lets through as 500s; here they are a 400, like a body that is not
JSON. The check runs as the app's ``before_request`` hook (after authentication and guards,
before Litestar decodes ``data``), and the command route calls :func:`json_of` itself.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request

from evgate.api.problems import ApiError

__all__ = ["MAX_DEPTH", "check_json_body", "json_of"]

MAX_DEPTH = 32

# A charset parameter JSON may carry: UTF-8, or ASCII (a subset of it).
_UTF8 = {"utf-8", "utf8", "us-ascii", "ascii"}


def _too_deep(value: object) -> bool:
    """Whether ``value`` (decoded JSON) nests deeper than MAX_DEPTH (walked without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > MAX_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


_TOO_DEEP = f"the body nests deeper than {MAX_DEPTH} levels"


def json_of(request: Request[Any, Any, Any], body: bytes) -> Any:
    """The JSON value of a request's ``body``.

    Raises:
        ApiError: 400 for a charset other than UTF-8, bytes that are not UTF-8, text that is
            not JSON, or nesting deeper than MAX_DEPTH.
    """
    charset = request.content_type[1].get("charset")
    if charset is not None and charset.strip('"').lower() not in _UTF8:
        raise ApiError(f"JSON bodies are UTF-8 (RFC 8259), not charset={charset}", 400)
    try:
        value = msgspec.json.decode(body)
    except UnicodeDecodeError:
        raise ApiError("the body is not UTF-8 (RFC 8259)", 400) from None
    except RecursionError:
        raise ApiError(_TOO_DEEP, 400) from None
    except msgspec.DecodeError as exc:
        raise ApiError(f"the body is not JSON: {exc}", 400) from None
    if _too_deep(value):
        raise ApiError(_TOO_DEEP, 400)
    return value


async def check_json_body(request: Request[Any, Any, Any]) -> None:
    """``before_request``: refuse a body that routes taking JSON ``data`` could not decode."""
    if "data" not in request.route_handler.parsed_fn_signature.parameters:
        return
    body = await request.body()
    if body.strip():
        json_of(request, body)
