"""api room: what a request's query parameters and JSON body must be, read as strictly as the
OpenAPI document states them, before Litestar converts them.

Litestar converts leniently (msgspec ``strict=False``): ``0`` for ``false``, a number of
seconds for a date-time, the first of a repeated parameter, ``null`` for an absent choice; the
document promises none of that, so these are refused here (422), as schemathesis's negative
tests expect. A body must be
JSON text in UTF-8 (RFC 8259: the only encoding for JSON between systems), nested at most
:data:`~evgate.protocol.validation.MAX_NESTING` deep, the bound of a charger's frames (evgate's
deepest body, a charging profile in a command, has 5 levels): msgspec raises
``UnicodeDecodeError`` for bytes that are not UTF-8 and ``RecursionError`` for deep nesting,
which Litestar let through as 500s; here they are a 400, like a body that is not JSON. The
depth is read from the text before any decoding, with the check the frames use. The checks
run as the app's ``before_request`` hook (after authentication and guards, before Litestar
reads ``data``); the command route calls :func:`json_of` itself.
"""

from __future__ import annotations

import re
import types
from datetime import datetime
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, overload

import msgspec
from litestar import Request
from litestar.params import ParameterKwarg
from litestar.typing import FieldDefinition

from evgate.api.cards import REFUSE_CARD_NUMBERS, holds_card_number
from evgate.api.problems import ApiError, Unprocessable
from evgate.protocol.validation import MAX_NESTING, nests_deeper

__all__ = ["aware", "check_request", "json_of", "set_fields"]

# A charset parameter JSON may carry: UTF-8, or ASCII (a subset of it).
_UTF8 = {"utf-8", "utf8", "us-ascii", "ascii"}


_TOO_DEEP = f"the body nests deeper than {MAX_NESTING} levels"


@overload
def aware(name: str, value: datetime) -> datetime: ...
@overload
def aware(name: str, value: None) -> None: ...
def aware(name: str, value: datetime | None) -> datetime | None:
    """``value``, which must say its offset from UTC (a time without one means no instant:
    422), or None."""
    if value is not None and value.tzinfo is None:
        raise Unprocessable(f"{name} needs a time zone offset (e.g. 2030-01-01T00:00:00Z)")
    return value


def set_fields(data: msgspec.Struct, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields a PATCH body set (absent ones are ``UNSET``; null is a value), by their
    Python names, ``without`` those the caller handles itself."""
    return {
        k: v
        for k, v in msgspec.structs.asdict(data).items()
        if v is not msgspec.UNSET and k not in without
    }


def _charset_checked(request: Request[Any, Any, Any]) -> None:
    charset = request.content_type[1].get("charset")
    if charset is not None and charset.strip('"').lower() not in _UTF8:
        raise ApiError(f"JSON bodies are UTF-8 (RFC 8259), not charset={charset}", 400)


def _decoded(body: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    try:
        value = decoder.decode(body)
    except UnicodeDecodeError:
        raise ApiError("the body is not UTF-8 (RFC 8259)", 400) from None
    except RecursionError:
        raise ApiError(_TOO_DEEP, 400) from None
    except msgspec.ValidationError as exc:
        raise ApiError(str(exc), 422) from None
    except msgspec.DecodeError as exc:
        raise ApiError(f"the body is not JSON: {exc}", 400) from None
    return value


_ANY = msgspec.json.Decoder()


@cache
def _decoder(body_type: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(body_type)


def json_of(request: Request[Any, Any, Any], body: bytes) -> Any:
    """The JSON value of a request's ``body``.

    Raises:
        ApiError: 400 for a charset other than UTF-8, bytes that are not UTF-8, text that is
            not JSON, or nesting deeper than MAX_NESTING.
    """
    _charset_checked(request)
    if nests_deeper(body, MAX_NESTING):
        raise ApiError(_TOO_DEEP, 400)
    return _decoded(body, _ANY)


def _arms(annotation: Any) -> set[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return set(get_args(annotation)) - {type(None)}
    return {annotation}


_INTEGER = re.compile(r"-?[0-9]+")


def _query_problem(raw: str, annotation: Any) -> str | None:
    """Why ``raw`` is not a value of ``annotation`` as the document writes it, or None."""
    arms = _arms(annotation)
    if arms == {int} and not _INTEGER.fullmatch(raw):
        return "Expected an integer"
    if arms == {bool} and raw not in ("true", "false"):
        return "Expected true or false"
    choices = [v for arm in arms if get_origin(arm) is Literal for v in get_args(arm)]
    if choices and raw not in choices:
        return f"Expected one of {', '.join(map(str, choices))}"
    if arms == {datetime}:
        try:
            msgspec.convert(raw, datetime)
        except msgspec.ValidationError:
            return "Expected an RFC 3339 date-time"
    return None


def _query_parameters(request: Request[Any, Any, Any]) -> list[tuple[str, FieldDefinition]]:
    """(name in the URL, field) of the route's query parameters that are not plain text."""
    found = []
    for name, field in request.route_handler.parsed_fn_signature.parameters.items():
        arms = _arms(field.annotation)
        literal = any(get_origin(arm) is Literal for arm in arms)
        if name in request.path_params or not (literal or arms & {int, bool, datetime}):
            continue
        kwarg = field.kwarg_definition
        if isinstance(kwarg, ParameterKwarg):
            name = kwarg.query or getattr(kwarg, "name", None) or name
        found.append((name, field))
    return found


async def check_request(request: Request[Any, Any, Any]) -> None:
    """``before_request``: refuse what Litestar would read leniently or fail on (see above).

    Raises:
        ApiError: 422 for a query parameter given twice or not of its documented type, a
            body not of the route's type, or a value that looks like a card number on a route
            that refuses them (``api/cards.py``); 400 for a body that is not UTF-8 JSON.
    """
    for wire, field in _query_parameters(request):
        values = request.query_params.getall(wire, [])
        if len(values) > 1:
            raise ApiError(f"{wire}: given {len(values)} times; once at most", 422)
        if values and (problem := _query_problem(values[0], field.annotation)):
            raise ApiError(f"{wire}: {problem}, got {values[0]!r}", 422)
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    body = await request.body()
    if body.strip():
        value = json_of(request, body)
        if request.route_handler.opt.get(REFUSE_CARD_NUMBERS) and holds_card_number(value):
            # Said before any other problem, and without the value: it is not to be echoed.
            raise ApiError(
                "a value looks like a card number (a Luhn-valid run of 12-19 digits);"
                " evgate never stores card numbers: send the payment provider's token",
                422,
            )
        _decoded(body, _decoder(data.annotation))  # strictly the document's types
