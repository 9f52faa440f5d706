"""api room: the error answers in the OpenAPI document, so that it lists every status code and
content type the API sends (issue 15: 30 undocumented status codes, 4 content types).

Litestar documents one 400 per operation, as ``application/json`` in its own shape; evgate
answers every error as an RFC 9457 problem (``application/problem+json``, see ``problems.py``).
:func:`document_problems` rewrites each operation's error responses from what the operation
takes, by one rule for the whole API:

===  ==========================================================================================
400  the body is not UTF-8 JSON, or nests too deep (operations with a body)
401  no bearer token, or an unknown one (every operation)
403  a ``read`` token on a write (every operation but GET), or on a route with a guard of its
     own (the tokens: admin only)
404  the path names nothing: an unknown id, or one no resource can have (operations with a path
     parameter)
413  the body is larger than Litestar's limit (operations with a body)
422  a value of the wrong type, out of its documented range, or refused by a rule or by the
     database (operations with a parameter or a body)
503  the database is away, or the API's connection cap is reached (every operation)
===  ==========================================================================================

Litestar also writes an optional query parameter as ``oneOf: [X, null]`` (an optional
Literal as ``type: [null, string]`` with null in its ``enum``): a query string has no null (an
absent parameter is the default), so the null arm is dropped and the bounds Litestar put
beside the ``oneOf`` join X.

A route handler adds its own in ``opt["problems"]`` (409, 502, 504: e.g. the commands), and
may give the JSON schema of a body or answer that Litestar cannot see in its signature in
``opt["request_schema"]`` and ``opt["answer_schema"]`` (the commands read the raw body).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.routes import HTTPRoute

from evgate.api.problems import PROBLEM_JSON
from evgate.api.security import scope_guard

__all__ = ["document_problems"]

_PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    title="Problem",
    description="An RFC 9457 problem document; some add members (errorCode, ...).",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER, minimum=400, maximum=599),
        "detail": Schema(type=OpenAPIType.STRING),
    },
)

_WHY = {
    400: "The body is not UTF-8 JSON, or nests too deep",
    401: "No bearer token, or an unknown or revoked one",
    403: "The token's scope is read; this needs admin",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "The body is too large",
    422: "A value is invalid, out of its documented range, or cannot be stored",
    502: "The charger answered with a CALLERROR or an invalid payload, or disconnected",
    503: "The database is unavailable or the API is at its connection cap; retry later",
    504: "The charger did not answer in time",
}

_SAFE = {"GET", "HEAD", "OPTIONS"}


def _statuses(method: str, operation: Operation, opt: dict[str, Any], own_guard: bool) -> set[int]:
    statuses = {401, 503, *opt.get("problems", ())}
    if method not in _SAFE or own_guard:
        statuses.add(403)
    parameters = [p for p in operation.parameters or () if not isinstance(p, Reference)]
    if any(p.param_in == "path" for p in parameters):
        statuses.add(404)
    if parameters:
        statuses.add(422)
    if operation.request_body is not None:
        statuses |= {400, 413, 422}
    return statuses


def _without_null(schema: Schema | Reference | None) -> Schema | Reference | None:
    """``schema`` without a ``null`` arm in its oneOf, the outer keywords joined to the arm
    (or, for an optional Literal, without ``null`` in its types and its enum)."""
    if isinstance(schema, Schema) and isinstance(schema.type, list) and schema.enum:
        types = [t for t in schema.type if t != OpenAPIType.NULL]
        return dataclasses.replace(
            schema,
            type=types[0] if len(types) == 1 else types,
            enum=[v for v in schema.enum if v is not None],
        )
    if not isinstance(schema, Schema) or not schema.one_of:
        return schema
    arms = [a for a in schema.one_of if not (isinstance(a, Schema) and a.type == OpenAPIType.NULL)]
    if len(arms) != 1 or len(arms) == len(schema.one_of) or not isinstance(arms[0], Schema):
        return schema
    joined = dataclasses.replace(arms[0])
    for field in dataclasses.fields(Schema):
        value = getattr(schema, field.name)
        if field.name != "one_of" and value is not None and getattr(joined, field.name) is None:
            setattr(joined, field.name, value)
    return joined


def _json(schema: Schema | Reference) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=schema)}


def _document(method: str, operation: Operation, opt: dict[str, Any], own_guard: bool) -> None:
    for parameter in operation.parameters or ():
        if not isinstance(parameter, Reference) and parameter.param_in == "query":
            parameter.schema = _without_null(parameter.schema)
    if "request_schema" in opt:
        operation.request_body = RequestBody(content=_json(opt["request_schema"]), required=False)
    responses = operation.responses if operation.responses is not None else {}
    if "answer_schema" in opt:
        # The route's own answer (200); another 2xx (a command's 202) documents itself.
        response = responses.get("200")
        if isinstance(response, OpenAPIResponse):
            response.content = _json(opt["answer_schema"])
    # Litestar's own 400 (ValidationException as application/json) is never sent as such.
    errors = [code for code in responses if not code.startswith("2")]
    for code in errors:
        del responses[code]
    problem = {PROBLEM_JSON: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))}
    for status in sorted(_statuses(method, operation, opt, own_guard)):
        responses[str(status)] = OpenAPIResponse(description=_WHY[status], content=problem)
    operation.responses = responses


def document_problems(app: Litestar) -> None:
    """Give every operation of ``app``'s OpenAPI document its error responses (call once, after
    the app is built and before the document is first served)."""
    document = app.openapi_schema
    if document.components.schemas is None:
        document.components.schemas = {}
    document.components.schemas["Problem"] = _PROBLEM
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or document.paths is None:
            continue
        path_item = document.paths.get(route.path_format)
        if path_item is None:
            continue
        for handler in route.route_handlers:
            # A guard besides the scope guard may refuse a read token whatever the method.
            own_guard = any(
                getattr(guard, "func", guard) is not scope_guard  # Litestar wraps them
                for guard in handler.resolve_guards()
            )
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if isinstance(operation, Operation):
                    _document(method, operation, handler.opt, own_guard)
