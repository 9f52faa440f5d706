"""api room: ``POST /api/v1/chargers/{id}/commands/{Action}`` — OCPP commands to chargers.

The body is the OCPP request payload of ``Action`` as JSON (exact OCPP field names); the answer
is the charger's response payload. The request is validated exactly as the charger would
validate it (the protocol core's codec) before anything is sent. Answers:

===  =====================================================================================
200  the charger's CALLRESULT payload
400  the body is not JSON
404  unknown charger; unknown action, or an action chargers send rather than receive
409  the charger is not connected
422  the payload is invalid for the action (``errorCode`` names the OCPP violation), or a
     command evgate refuses to send (a weak AuthorizationKey)
502  the charger answered with a CALLERROR (``errorCode``, ``errorDescription``,
     ``errorDetails``), answered with a payload that breaks the schema, or disconnected
     before answering
503  too many commands already wait for this charger
504  no answer within ``call_timeout``
===  =====================================================================================
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromPath, Parameter

from evgate.api.context import ApiContext, Ctx
from evgate.api.inputs import json_of
from evgate.api.problems import ApiError, Conflict, Unprocessable
from evgate.gateway.interface import (
    CallRejected,
    CallTimeout,
    ChargerBusy,
    ChargerDisconnected,
    ChargerNotConnected,
    InvalidCommand,
    InvalidResponse,
)
from evgate.protocol import frames
from evgate.protocol.errors import OcppError
from evgate.protocol.v16 import ACTIONS, Direction, Message

__all__ = ["COMMANDS", "CommandController", "call_charger"]

#: The actions a CSMS sends to chargers (the security extension's included).
COMMANDS: tuple[str, ...] = tuple(
    sorted(name for name, spec in ACTIONS.items() if Direction.csms_to_charger in spec.direction)
)


def _request_of(request: Request[Any, Any, Any], action: str, body: bytes) -> Message:
    """Decode and validate the body as ``action``'s request payload.

    Raises:
        ApiError: 404 for an action that is not a command, 400 for a body that is not UTF-8
            JSON (see ``inputs.json_of``), 422 for a payload the charger would refuse.
    """
    if action not in COMMANDS:
        detail = (
            f"{action} is sent by chargers, not to them"
            if action in ACTIONS
            else f"unknown command {action!r}; commands: {', '.join(COMMANDS)}"
        )
        raise ApiError(detail, 404)
    body = body.strip() or b"{}"
    json_of(request, body)
    call = frames.Call("api", action, msgspec.Raw(body))
    try:
        message, _ = frames.decode_request(call, accept_direction=Direction.csms_to_charger)
        # What evgate refuses from chargers it does not send them (nor could it route it).
        frames.refuse_nul(call.payload)
    except OcppError as exc:
        raise Unprocessable(exc.description, errorCode=exc.code.value) from None
    return message


class CommandController(Controller):
    path = "/api/v1/chargers/{charger_id:str}/commands"
    tags = ["commands"]

    @post(
        "/{action:str}",
        status_code=200,
        summary="Send an OCPP command to a connected charger and return its answer",
        description=(
            "The body is the OCPP 1.6J request payload of the action (an empty body stands for"
            " {}); the answer is the charger's response payload. Actions: "
            + ", ".join(COMMANDS)
            + ". An accepted ChangeConfiguration of AuthorizationKey (16-40 characters)"
            " becomes the charger's secret."
        ),
        opt={
            "problems": (409, 502, 504),
            "request_schema": Schema(
                type=OpenAPIType.OBJECT, description="the action's OCPP 1.6J request payload"
            ),
            "answer_schema": Schema(
                type=OpenAPIType.OBJECT, description="the charger's OCPP 1.6J response payload"
            ),
        },
    )
    async def send_command(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        charger_id: FromPath[str],
        action: Annotated[str, Parameter(schema_extra={"enum": list(COMMANDS)})],
    ) -> Response[bytes]:
        command = _request_of(request, action, await request.body())
        response = await call_charger(ctx, charger_id, command)
        return Response(msgspec.json.encode(response), media_type="application/json")


async def call_charger(ctx: ApiContext, charger_id: str, command: Message) -> Message:
    """Send ``command`` to the charger and return its answer, each failure as its problem
    (see the module's table).

    Raises:
        NotFound: unknown charger. ApiError: 409, 422, 502, 503 or 504.
    """
    gateway = ctx.gateway
    if gateway is None or gateway.connection(charger_id) is None:
        # Not here: an unknown charger is a 404; a known one may be held by another
        # evgate process, which gateway.call reaches (or says ChargerNotConnected: 409).
        await ctx.chargers.get(charger_id)
    if gateway is None:
        raise Conflict(f"charger {charger_id!r} is not connected")
    try:
        return await gateway.call(charger_id, command)
    except ChargerNotConnected as exc:
        raise Conflict(str(exc)) from None
    except InvalidCommand as exc:
        raise Unprocessable(str(exc)) from None
    except CallRejected as exc:
        raise ApiError(
            f"the charger answered with a CALLERROR: {exc.code}",
            502,
            errorCode=exc.code,
            errorDescription=exc.description,
            errorDetails=exc.details,
        ) from None
    except InvalidResponse as exc:
        raise ApiError(
            f"the charger's answer breaks the schema: {exc.error.description}",
            502,
            errorCode=exc.error.code.value,
        ) from None
    except ChargerDisconnected as exc:
        raise ApiError(str(exc), 502) from None
    except ChargerBusy as exc:
        raise ApiError(str(exc), 503) from None
    except CallTimeout as exc:
        raise ApiError(str(exc), 504) from None
