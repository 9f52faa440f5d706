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
     command evgate refuses to send (a weak AuthorizationKey; a ReserveNow whose
     reservationId is another charger's reservation: ``POST /api/v1/reservations`` numbers
     them; an operator's own id moves evgate's numbering past it)
502  the charger answered with a CALLERROR (``errorCode``, ``errorDescription``,
     ``errorDetails``), answered with a payload that breaks the schema, or disconnected
     before answering
503  too many commands already wait for this charger
504  no answer within ``call_timeout``
===  =====================================================================================

With ``Prefer: respond-async`` (RFC 7240) the same request is answered at once: 202 with the
command's id, its ``Location`` (``GET /api/v1/commands/{id}``: pending, then completed with the
charger's answer or failed with a problem) and ``Preference-Applied``; the outcome also goes
to subscribers of ``command.completed``. ``POST /api/v1/bulk-commands`` sends one command
(``action``, ``request``) to many chargers (``chargerIds``, or every charger of
``installationId``), always in that form: 202 with one command id per charger,
``GET /api/v1/bulk-commands/{id}`` for their outcomes. A charger that is not connected is
not an error of the request then, but of its command (``charger-offline``). See
``api/async_commands.py``; without the header nothing changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromPath, HeaderParameter, JSONBody, Parameter

from evgate.api.async_commands import Accepted, TooManyPending, problem_of
from evgate.api.bounds import BodyBigintId
from evgate.api.chargers import ChargerId
from evgate.api.context import ApiContext, Ctx
from evgate.api.inputs import json_of
from evgate.api.problems import ApiError, Conflict, Unprocessable
from evgate.events.catalog import CommandProblem
from evgate.gateway.interface import CommandError, InvalidCommand, authorization_key
from evgate.protocol import frames
from evgate.protocol.errors import OcppError
from evgate.protocol.v16 import ACTIONS, Direction, Message
from evgate.storage.commands import KEPT_FOR, CommandRow
from evgate.storage.db import tenant
from evgate.storage.errors import NotFound

__all__ = [
    "COMMANDS",
    "MAX_BULK",
    "BulkCommandController",
    "CommandController",
    "CommandStatusController",
    "call_charger",
]

#: The most chargers one bulk command reaches.
MAX_BULK = 5000
#: Seconds a client is asked to wait when this process runs too many commands already.
RETRY_AFTER_BUSY = 5

#: The actions a CSMS sends to chargers (the security extension's included).
COMMANDS: tuple[str, ...] = tuple(
    sorted(name for name, spec in ACTIONS.items() if Direction.csms_to_charger in spec.direction)
)


async def call_charger(ctx: ApiContext, charger_id: str, command: Message) -> Message:
    """Send ``command`` to the charger through ``ctx.gateway`` and return its answer; each
    failure is the problem the module docstring's table gives it.

    Raises:
        NotFound: no such charger.
        ApiError: 409, 422, 502, 503 or 504 (see the module docstring).
    """
    gateway = ctx.gateway
    await _known(ctx, charger_id)
    if gateway is None:
        raise Conflict(f"charger {charger_id!r} is not connected")
    try:
        return await gateway.call(charger_id, command)
    except CommandError as exc:
        problem = problem_of(exc)
        extra = msgspec.to_builtins(problem)
        for member in ("type", "status", "detail"):
            del extra[member]
        raise ApiError(problem.detail, problem.status, **extra) from None


async def _known(ctx: ApiContext, charger_id: str) -> None:
    """Raise NotFound for an unknown charger, or another tenant's. For the operator, one held
    here is known at once; any other is looked up (it may be held by another evgate process,
    which gateway.call reaches, or by none: ChargerNotConnected, 409). A sub-operator's request
    always reads the row, which row-level security shows it only for its own chargers: the
    gateway's connections are every tenant's."""
    gateway = ctx.gateway
    if tenant() is not None or gateway is None or gateway.connection(charger_id) is None:
        await ctx.chargers.get(charger_id)


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


def _respond_async(prefer: str) -> bool:
    """Whether a ``Prefer`` header (RFC 7240: preferences, each with parameters) asks for
    ``respond-async``."""
    return any(part.split(";")[0].strip().lower() == "respond-async" for part in prefer.split(","))


CommandStatus = Literal["pending", "completed", "failed"]


class CommandView(msgspec.Struct, rename="camel", kw_only=True):
    """A command of the asynchronous form: ``pending`` until the charger answered
    (``completed``, with its ``response`` payload) or it failed (``failed``, with a
    ``problem``). Kept 24 hours after the request."""

    id: UUID
    bulk_command_id: UUID | None
    charger_id: str
    action: str
    status: CommandStatus
    request: dict[str, Any]
    response: dict[str, Any] | None
    problem: CommandProblem | None
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime


class BulkCommandIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """One command to many chargers: ``chargerIds``, or every charger of ``installationId``
    (exactly one of them); ``request`` is ``action``'s OCPP 1.6J request payload."""

    action: Annotated[
        str, msgspec.Meta(description="the OCPP action, one of: " + ", ".join(COMMANDS))
    ]
    charger_ids: (
        Annotated[list[ChargerId], msgspec.Meta(min_length=1, max_length=MAX_BULK)] | None
    ) = None
    installation_id: BodyBigintId | None = None
    request: dict[str, Any] = msgspec.field(default_factory=dict)


class BulkCommandView(msgspec.Struct, rename="camel", kw_only=True):
    """A bulk command: one command per charger, with the count of each status."""

    id: UUID
    action: str
    request: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    pending: int
    completed: int
    failed: int
    commands: list[CommandView]


def _pending(
    command_id: UUID,
    bulk_id: UUID | None,
    charger_id: str,
    action: str,
    command: Message,
    now: datetime,
) -> CommandView:
    return CommandView(
        id=command_id,
        bulk_command_id=bulk_id,
        charger_id=charger_id,
        action=action,
        status="pending",
        request=msgspec.to_builtins(command),
        response=None,
        problem=None,
        created_at=now,
        completed_at=None,
        expires_at=now + KEPT_FOR,
    )


_INTERRUPTED = CommandProblem(
    type="interrupted", status=503, detail="the evgate process running it stopped"
)


def _view(row: CommandRow) -> CommandView:
    decode = msgspec.json.decode
    status: CommandStatus = row.status
    problem = None if row.problem is None else decode(row.problem, type=CommandProblem)
    if row.interrupted:  # its runner is gone: it will never end
        status, problem = "failed", _INTERRUPTED
    return CommandView(
        id=row.id,
        bulk_command_id=row.bulk_id,
        charger_id=row.charger_id,
        action=row.action,
        status=status,
        request=decode(row.request),
        response=None if row.response is None else decode(row.response),
        problem=problem,
        created_at=row.created_at,
        completed_at=row.completed_at,
        expires_at=row.expires_at,
    )


async def _submit(
    ctx: ApiContext,
    charger_ids: list[str],
    action: str,
    command: Message,
    bulk_id: UUID | None = None,
) -> tuple[datetime, list[Accepted]]:
    """Accept a command to each charger for the background.

    Raises:
        Unprocessable: a command evgate refuses to send (a weak AuthorizationKey): refused
            now, as the synchronous form does, rather than accepted and then failed.
        ApiError: 503 when this process runs too many commands already.
    """
    try:
        authorization_key(command)
    except InvalidCommand as exc:
        raise Unprocessable(str(exc)) from None
    try:
        return await ctx.async_commands.submit(charger_ids, action, command, bulk_id)
    except TooManyPending as exc:
        raise ApiError(
            f"{exc}; retry later", 503, headers={"Retry-After": str(RETRY_AFTER_BUSY)}
        ) from None


def _accepted(view: msgspec.Struct, location: str) -> Response[bytes]:
    return Response(
        msgspec.json.encode(view),
        status_code=202,
        media_type="application/json",
        headers={"Location": location, "Preference-Applied": "respond-async"},
    )


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
            " becomes the charger's secret. A ReserveNow's reservationId may not be another"
            " charger's reservation (422); POST /api/v1/reservations numbers them for you."
            " With Prefer: respond-async the answer is 202 at"
            " once, with the command's id and its Location (GET /api/v1/commands/{id}); a"
            " charger that is not connected then fails the command (charger-offline)."
        ),
        responses={
            202: ResponseSpec(
                CommandView,
                description="With Prefer: respond-async: accepted, the outcome at Location",
            )
        },
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
        prefer: Annotated[
            str | None,
            HeaderParameter(
                name="Prefer",
                description="respond-async: answer 202 at once, the outcome at Location",
            ),
        ] = None,
    ) -> Response[bytes]:
        command = _request_of(request, action, await request.body())
        if prefer is not None and _respond_async(prefer):
            await _known(ctx, charger_id)
            now, [accepted] = await _submit(ctx, [charger_id], action, command)
            view = _pending(accepted.id, None, charger_id, action, command, now)
            return _accepted(view, f"/api/v1/commands/{accepted.id}")
        response = await call_charger(ctx, charger_id, command)
        return Response(msgspec.json.encode(response), media_type="application/json")


class CommandStatusController(Controller):
    path = "/api/v1/commands"
    tags = ["commands"]

    @get(
        "/{command_id:uuid}",
        summary="A command sent with Prefer: respond-async (or of a bulk command): its outcome",
        description=(
            "pending; completed with the charger's response payload; or failed with a problem"
            " (timeout, charger-offline, charger-disconnected, charger-busy, callerror with the"
            " charger's errorCode, invalid-response, refused, interrupted, unavailable,"
            " internal-error). Any evgate process"
            " of a cluster answers; kept 24 hours after the request."
        ),
    )
    async def get_command(self, ctx: Ctx, command_id: FromPath[UUID]) -> CommandView:
        return _view(await ctx.async_commands.store.get(command_id))


class BulkCommandController(Controller):
    path = "/api/v1/bulk-commands"
    tags = ["commands"]

    @post(
        "/",
        status_code=202,
        summary="Send one OCPP command to many chargers (a list, or an installation's)",
        description=(
            "Answered at once: 202 with one command id per charger and the bulk command's"
            " Location (GET /api/v1/bulk-commands/{id}); each outcome also at"
            f" GET /api/v1/commands/{{id}} and as command.completed. At most {MAX_BULK}"
            " chargers; a bounded number of commands wait for chargers at once."
        ),
    )
    async def send_bulk(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        data: JSONBody[BulkCommandIn],
    ) -> Response[bytes]:
        action = data.action
        if action not in COMMANDS:
            raise Unprocessable(f"action: not a command; commands: {', '.join(COMMANDS)}")
        command = _request_of(request, action, msgspec.json.encode(data.request))
        runner = ctx.async_commands
        if (data.charger_ids is None) == (data.installation_id is None):
            raise Unprocessable("give exactly one of chargerIds and installationId")
        if data.charger_ids is not None:
            charger_ids = list(dict.fromkeys(data.charger_ids))
            unknown = await runner.store.unknown_chargers(charger_ids)
            if unknown:
                raise Unprocessable(
                    f"chargerIds: unknown charger(s) {unknown[:20]}", unknown=unknown
                )
        else:
            assert data.installation_id is not None
            try:
                charger_ids = await runner.store.chargers_of_installation(data.installation_id)
            except NotFound as exc:  # a body naming nothing: 422, as unknown chargerIds
                raise Unprocessable(f"installationId: {exc}") from None
            if not charger_ids:
                raise Unprocessable(f"installation {data.installation_id} has no chargers")
            if len(charger_ids) > MAX_BULK:
                raise Unprocessable(
                    f"installation {data.installation_id} has more than {MAX_BULK} chargers"
                )
        bulk_id = uuid4()
        now, accepted = await _submit(ctx, charger_ids, action, command, bulk_id)
        view = BulkCommandView(
            id=bulk_id,
            action=action,
            request=msgspec.to_builtins(command),
            created_at=now,
            expires_at=now + KEPT_FOR,
            pending=len(accepted),
            completed=0,
            failed=0,
            commands=[
                _pending(a.id, bulk_id, a.charger_id, action, command, now) for a in accepted
            ],
        )
        return _accepted(view, f"/api/v1/bulk-commands/{bulk_id}")

    @get("/{bulk_id:uuid}", summary="A bulk command: each charger's command and its outcome")
    async def get_bulk(self, ctx: Ctx, bulk_id: FromPath[UUID]) -> BulkCommandView:
        row = await ctx.async_commands.store.bulk(bulk_id)
        views = [_view(c) for c in row.commands]
        return BulkCommandView(
            id=row.id,
            action=row.action,
            request=msgspec.json.decode(row.request),
            created_at=row.created_at,
            expires_at=row.expires_at,
            pending=sum(v.status == "pending" for v in views),
            completed=sum(v.status == "completed" for v in views),
            failed=sum(v.status == "failed" for v in views),
            commands=views,
        )
