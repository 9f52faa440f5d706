"""api room: commands run in the background — the API's asynchronous form
(``Prefer: respond-async``) and bulk commands (issue 21.5).

:class:`AsyncCommands` stores each command ``pending`` (``storage/commands.py``), answers the
request at once (202), sends the command through the same ChargerLink as the synchronous form
(so its effects are recorded alike), and stores the outcome with a ``command.completed``
event: the charger's answer, or a :class:`~evgate.events.catalog.CommandProblem`, typed by
:func:`problem_of`, the one mapping of a failed command that the synchronous form answers as
HTTP problems too.

Bounded: at most ``concurrency`` commands of this process wait for chargers at once (a bulk
command to a whole installation does not flood the gateway), and at most ``max_pending`` are
accepted and unfinished (beyond: :class:`TooManyPending`, a 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID, uuid4

import msgspec

from evgate.events.builders import command_completed
from evgate.events.catalog import CommandProblem
from evgate.gateway.interface import (
    CallRejected,
    CallTimeout,
    ChargerBusy,
    ChargerDisconnected,
    ChargerLink,
    ChargerNotConnected,
    CommandError,
    InvalidCommand,
    InvalidResponse,
)
from evgate.protocol.v16 import Message
from evgate.storage.commands import CommandOutcome, CommandStore, NewCommand

__all__ = ["Accepted", "AsyncCommands", "TooManyPending", "problem_of"]

log = logging.getLogger(__name__)

#: Commands of one process waiting for chargers at once (bulk commands included).
CONCURRENCY = 32
#: Commands of one process accepted and not finished; more are refused (503) until some end.
MAX_PENDING = 10_000


def problem_of(exc: CommandError) -> CommandProblem:
    """What a failed command's caller is told: its type, the HTTP status of the synchronous
    form, a detail and, for a CALLERROR, the charger's error.

    Raises:
        TypeError: a CommandError subclass this mapping does not know (a bug).
    """
    if isinstance(exc, ChargerNotConnected):
        return CommandProblem(type="charger-offline", status=409, detail=str(exc))
    if isinstance(exc, InvalidCommand):
        return CommandProblem(type="refused", status=422, detail=str(exc))
    if isinstance(exc, CallRejected):
        return CommandProblem(
            type="callerror",
            status=502,
            detail=f"the charger answered with a CALLERROR: {exc.code}",
            errorCode=exc.code,
            errorDescription=exc.description,
            errorDetails=exc.details,
        )
    if isinstance(exc, InvalidResponse):
        return CommandProblem(
            type="invalid-response",
            status=502,
            detail=f"the charger's answer breaks the schema: {exc.error.description}",
            errorCode=exc.error.code.value,
        )
    if isinstance(exc, ChargerDisconnected):
        return CommandProblem(type="charger-disconnected", status=502, detail=str(exc))
    if isinstance(exc, ChargerBusy):
        return CommandProblem(type="charger-busy", status=503, detail=str(exc))
    if isinstance(exc, CallTimeout):
        return CommandProblem(type="timeout", status=504, detail=str(exc))
    raise TypeError(f"no problem for {type(exc).__name__}")


class TooManyPending(Exception):
    """This process already runs ``max_pending`` commands; retry later."""


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """A command accepted for the background: its id and charger."""

    id: UUID
    charger_id: str


def utc_now() -> datetime:
    return datetime.now(UTC)


class AsyncCommands:
    """Runs the API's background commands (see the module docstring).

    Owns its tasks: ``await close()`` cancels those still running and records their commands
    as failed, ``interrupted`` (a process killed instead reads the same, see
    ``storage/commands.py``).

    Args:
        link: the link commands go through (the one the synchronous form uses).
        store: the command records.
        runner: this process's cluster instance (``Cluster.instance``).
        concurrency: commands waiting for chargers at once.
        max_pending: commands accepted and not finished.
    """

    def __init__(
        self,
        link: ChargerLink,
        store: CommandStore,
        runner: str,
        concurrency: int = CONCURRENCY,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.link = link
        self.store = store
        self.runner = runner
        self.max_pending = max_pending
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        # Command id -> (its charger and action, its task): the unfinished ones.
        self._running: dict[UUID, tuple[NewCommand, asyncio.Task[None]]] = {}
        self._closed = False

    async def submit(
        self,
        charger_ids: list[str],
        action: str,
        request: Message,
        bulk_id: UUID | None = None,
    ) -> tuple[datetime, list[Accepted]]:
        """Store a command to each charger as pending, start them, and return when they were
        accepted and their ids (in ``charger_ids`` order). With ``bulk_id``, they are one bulk
        command of that id.

        Raises:
            TooManyPending: accepting them would exceed ``max_pending``.
            DatabaseUnavailable: they could not be stored (nothing was sent).
        """
        if self._closed or len(self._running) + len(charger_ids) > self.max_pending:
            raise TooManyPending(f"{len(self._running)} commands are already running here")
        payload = msgspec.json.encode(request)
        commands = [
            NewCommand(id=uuid4(), charger_id=c, action=action, request=payload, bulk_id=bulk_id)
            for c in charger_ids
        ]
        now = self.clock()
        await self.store.create(commands, self.runner, now)
        loop = asyncio.get_running_loop()
        for command in commands:
            # The request's own work: it acts for the request's sub-operator, as the request.
            self._running[command.id] = (command, loop.create_task(self._run(command, request)))
        return now, [Accepted(id=c.id, charger_id=c.charger_id) for c in commands]

    async def _run(self, command: NewCommand, request: Message) -> None:
        response: bytes | None = None
        problem: CommandProblem | None = None
        try:
            async with self._slots:
                try:
                    answer = await self.link.call(command.charger_id, request)
                    response = msgspec.json.encode(answer)
                except CommandError as exc:
                    problem = problem_of(exc)
                except ConnectionError as exc:  # DatabaseUnavailable: no route to the charger
                    problem = CommandProblem(type="unavailable", status=503, detail=str(exc))
                except Exception:
                    log.exception("the command %s to %s failed", command.id, command.charger_id)
                    problem = CommandProblem(type="internal-error", status=500, detail="a bug")
            outcome = self._outcome(command, response, problem)
            delay = 0.1
            while True:  # the charger has answered: retry while the database is away
                try:
                    await self.store.finish(outcome)
                    break
                except ConnectionError:  # DatabaseUnavailable: the pool's health reports it
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        except Exception:
            log.exception("the outcome of command %s was not stored", command.id)
        finally:
            self._running.pop(command.id, None)

    def _outcome(
        self, command: NewCommand, response: bytes | None, problem: CommandProblem | None
    ) -> CommandOutcome:
        at = self.clock()
        bulk_id = None if command.bulk_id is None else str(command.bulk_id)
        return CommandOutcome(
            id=command.id,
            status="completed" if problem is None else "failed",
            completed_at=at,
            event=command_completed(
                command.charger_id, str(command.id), bulk_id, command.action, response, problem, at
            ),
            response=response,
            problem=None if problem is None else msgspec.json.encode(problem),
        )

    async def close(self) -> None:
        """Stop: cancel the running commands and record them ``interrupted`` (best effort:
        with the database away they read as interrupted anyway, their runner gone)."""
        self._closed = True
        running = list(self._running.values())
        for _, task in running:
            task.cancel()
        for _, task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stopped = CommandProblem(
            type="interrupted", status=503, detail="the evgate process running it stopped"
        )
        for command, task in running:
            if task.cancelled():
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await self.store.finish(self._outcome(command, None, stopped))
