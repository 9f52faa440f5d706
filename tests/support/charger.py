"""The one test charger: the ``ocpp`` library's ChargePoint (a real OCPP 1.6 client) that
answers evgate's commands as a charger would, and can be scripted frame by frame for the
answers no well-behaved charger gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

__all__ = ["Script", "TestCharger", "ocpp_charger"]

# A frame-by-frame script: the answer (a frame) to each frame evgate sends, or None for silence.
Script = Callable[[list[Any]], Any]

C = TypeVar("C", bound=ChargePoint)


class TestCharger(ChargePoint):  # type: ignore[misc]
    """A charger that accepts Reset and ChangeConfiguration (keeping the configuration it is
    sent; ``answers`` sets the status per key), answers GetConfiguration, GetDiagnostics,
    ReserveNow and CancelReservation, and boots with :meth:`boot`. With ``script`` set, every
    frame from evgate goes to it instead, and its answer is sent as it is (malformed or not)."""

    __test__ = False  # a helper, not a test class

    def __init__(self, charger_id: str, ws: Any, **kw: Any) -> None:
        super().__init__(charger_id, ws, **kw)
        self.configuration: dict[str, str] = {}
        self.answers: dict[str, str] = {}
        self.script: Script | None = None

    @property
    def ws(self) -> Any:
        """The charger's websockets connection."""
        return self._connection

    async def route_message(self, raw_msg: str) -> None:
        if self.script is None:
            await super().route_message(raw_msg)
            return
        reply = self.script(json.loads(raw_msg))
        if reply is not None:
            await self._send(json.dumps(reply))

    async def boot(self) -> str:
        """Send a BootNotification; the registration status evgate answers."""
        response = await self.call(
            call.BootNotification(charge_point_vendor="evgate-tests", charge_point_model="T1")
        )
        return str(response.status)

    @on(Action.reset)
    def on_reset(self, type: str) -> Any:  # noqa: A002 - OCPP's name
        return call_result.Reset(status="Accepted")

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        status = self.answers.get(key, "Accepted")
        if status in ("Accepted", "RebootRequired"):
            self.configuration[key] = value
        return call_result.ChangeConfiguration(status=status)

    @on(Action.get_configuration)
    def on_get_configuration(self, **_: Any) -> Any:
        return call_result.GetConfiguration(
            configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]
        )

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, **_: Any) -> Any:
        return call_result.GetDiagnostics(file_name="diagnostics.zip")

    @on(Action.reserve_now)
    def on_reserve_now(self, **_: Any) -> Any:
        return call_result.ReserveNow(status="Accepted")

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, **_: Any) -> Any:
        return call_result.CancelReservation(status="Accepted")


@contextlib.asynccontextmanager
async def ocpp_charger(
    url: str,
    charger_id: str,
    cls: type[C] = TestCharger,  # type: ignore[assignment]
    response_timeout: float | None = None,
    script: Script | None = None,
    **connect: Any,
) -> AsyncIterator[C]:
    """A :class:`TestCharger` (or ``cls``, another ChargePoint), connected to ``url`` offering
    ocpp1.6 and reading, for the block's duration; ``script`` scripts a TestCharger's answers;
    ``connect`` goes to ``websockets.connect``."""
    connect.setdefault("subprotocols", ["ocpp1.6"])
    connect.setdefault("open_timeout", 5)
    async with websockets.connect(url, proxy=None, compression=None, **connect) as ws:
        timeout = {} if response_timeout is None else {"response_timeout": response_timeout}
        charger = cls(charger_id, ws, **timeout)
        if script is not None:
            assert isinstance(charger, TestCharger)
            charger.script = script
        reader = asyncio.create_task(charger.start())
        try:
            yield charger
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
