"""Frames in: decoding, routing, in-order answers, bad input answered or closed as defined."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest
import websockets
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.v16 import call
from picows import WSFrame, WSMsgType, WSTransport, ws_connect

from evgate.gateway.basic_routes import basic_routes
from evgate.gateway.connection import MAX_INBOX
from evgate.handlers import ChargerContext, Routes
from evgate.protocol.errors import SecurityError
from evgate.protocol.v16 import DataTransferRequest, DataTransferResponse, DataTransferStatus
from gateway.helpers import (
    PicowsClient,
    RecordingListener,
    StartGateway,
    close_code_of,
    connect,
    raw_connect,
    ws_frame,
)
from support import ocpp_charger, quiet_for, until

BOOT = ["BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]


async def _exchange(ws: object, frame: object) -> list:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))  # type: ignore[attr-defined]
    return json.loads(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[attr-defined]


async def test_ocpp_library_charger_boots_and_heartbeats(start_gateway: StartGateway) -> None:
    """The ocpp library's ChargePoint gets Accepted to BootNotification and a time to
    Heartbeat; frames are counted by action."""
    async with start_gateway() as g, ocpp_charger(g.url(), "CP-1") as charger:
        assert (await charger.call(call.BootNotification("M", "V"))).status == "Accepted"
        assert (await charger.call(call.Heartbeat())).current_time.endswith(("Z", "+00:00"))
        frames_in = g.metrics.counter("evgate_frames_received_total", "", ("action",))
        assert frames_in.value("BootNotification") == 1 and frames_in.value("Heartbeat") == 1


async def test_action_without_handler_answers_not_implemented(start_gateway: StartGateway) -> None:
    """A valid charger→CSMS action with no entry in the routing table: NotImplemented."""
    async with start_gateway() as g, ocpp_charger(g.url(), "CP-1") as charger:
        with pytest.raises(OcppNotImplemented):
            await charger.call(call.StatusNotification(1, "NoError", "Available"), suppress=False)


@pytest.mark.parametrize(
    ("frame", "code", "unique_id"),
    [
        ("not json", "FormationViolation", "-1"),
        ('{"a": 1}', "FormationViolation", "-1"),
        ([2, "u1", "Frobnicate", {}], "NotImplemented", "u1"),
        ([2, "u2", "Reset", {"type": "Hard"}], "NotSupported", "u2"),
        (
            [2, "u3", "BootNotification", {"chargePointVendor": "V"}],
            "OccurenceConstraintViolation",
            "u3",
        ),
        ([2, "u4", "Heartbeat", {"extra": 1}], "FormationViolation", "u4"),
        ([2, "u5"], "ProtocolError", "u5"),
        ([9, "u6", "x", {}], "ProtocolError", "u6"),
        # json.dumps spells the NUL as \u0000: evgate cannot store it, so it is refused.
        ([2, "u7", "Authorize", {"idTag": "tag\x00"}], "PropertyConstraintViolation", "u7"),
    ],
)
async def test_bad_frames_get_the_defined_callerror(
    start_gateway: StartGateway, frame: object, code: str, unique_id: str
) -> None:
    """Each malformed or invalid CALL is answered with its OCPP-J code, and the connection
    stays usable (a Heartbeat afterwards is answered)."""
    async with start_gateway() as g, connect(g.url()) as ws:
        answer = await _exchange(ws, frame)
        assert answer[:3] == [4, unique_id, code]
        assert (await _exchange(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]
        sent = g.metrics.counter("evgate_callerrors_sent_total", "", ("code",))
        assert sent.value(code) == 1


@pytest.mark.parametrize(
    ("frame", "unique_id"),
    [
        (b'[2,"\xff","Heartbeat",{}]', "-1"),
        (b'[2,"u1","Authorize",{"idTag":"\xc3"}]', "u1"),
        (b'[2,"u2","Heart\xc3beat",{}]', "u2"),
        (b"[" * 1000 + b"]" * 1000, "-1"),
        (b'[2,"u3","Heartbeat",' + b"[" * 2000 + b"]" * 2000 + b"]", "-1"),
    ],
    ids=["id-not-utf8", "payload-not-utf8", "action-not-utf8", "deep", "deep-payload"],
)
async def test_frames_not_utf8_or_nested_deep_are_answered_formation_violation(
    start_gateway: StartGateway, frame: bytes, unique_id: str
) -> None:
    """A text message that is not UTF-8, or nests a thousand deep, is answered
    FormationViolation (its id when readable), never closed 1011; the charger's next CALL is
    answered (issue 15)."""
    async with start_gateway() as g, connect(g.url()) as ws:
        await ws.send(frame, text=True)
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert answer[:3] == [4, unique_id, "FormationViolation"]
        assert (await _exchange(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]


async def test_bad_reply_from_charger_is_not_answered(start_gateway: StartGateway) -> None:
    """OCPP answers only CALLs: a CALLRESULT nobody waits for, or a broken one, gets nothing."""
    async with start_gateway() as g, connect(g.url()) as ws:
        await ws.send(json.dumps([3, "nobody-asked", {}]))
        await ws.send(json.dumps([3, 7, {}]))
        assert (await _exchange(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]


async def test_calls_are_answered_in_arrival_order(start_gateway: StartGateway) -> None:
    """A slow handler does not let a later CALL of the same charger overtake it."""
    release = asyncio.Event()

    async def slow_data_transfer(
        ctx: ChargerContext, request: DataTransferRequest
    ) -> DataTransferResponse:
        if request.message_id == "slow":
            await release.wait()
        return DataTransferResponse(status=DataTransferStatus.accepted, data=request.message_id)

    routes: Routes = {**basic_routes(), "DataTransfer": slow_data_transfer}
    async with start_gateway(routes=routes) as g, connect(g.url()) as ws:
        for uid, message_id in (("1", "slow"), ("2", "fast")):
            await ws.send(
                json.dumps([2, uid, "DataTransfer", {"vendorId": "v", "messageId": message_id}])
            )
        await quiet_for(0.1)  # no answer while the slow CALL is held; the fast one arrives
        release.set()
        first, second = [json.loads(await ws.recv()) for _ in range(2)]
        assert [first[1], second[1]] == ["1", "2"]
        assert first[2]["data"] == "slow" and second[2]["data"] == "fast"


async def test_handler_errors_become_callerrors(start_gateway: StartGateway) -> None:
    """A handler's OcppError is sent with its code; any other exception is InternalError with
    nothing internal in the description."""

    async def refusing(ctx: ChargerContext, request: DataTransferRequest) -> DataTransferResponse:
        if request.vendor_id == "secure":
            raise SecurityError("not allowed")
        raise RuntimeError("database password is hunter2")

    routes: Routes = {"DataTransfer": refusing}
    async with start_gateway(routes=routes) as g, connect(g.url()) as ws:
        answer = await _exchange(ws, [2, "a", "DataTransfer", {"vendorId": "secure"}])
        assert answer == [4, "a", "SecurityError", "not allowed", {}]
        answer = await _exchange(ws, [2, "b", "DataTransfer", {"vendorId": "other"}])
        assert answer[:3] == [4, "b", "InternalError"] and "hunter2" not in json.dumps(answer)


async def test_lenient_charger_violations_are_tolerated_and_counted(
    start_gateway: StartGateway,
) -> None:
    """A lenient charger's repairable payload is handled; the violation is counted."""
    async with start_gateway() as g:
        g.set("CP-L", lenient=True)
        await until(lambda: g.gateway.credentials_of("CP-L") is not None)
        async with connect(g.url("CP-L")) as ws:
            answer = await _exchange(ws, [2, "1", "Heartbeat", {"unexpected": True}])
            assert answer[:2] == [3, "1"]
        violations = g.metrics.counter("evgate_protocol_violations_total", "", ("action", "code"))
        assert violations.value("Heartbeat", "FormationViolation") == 1


async def test_fragmented_message_is_reassembled(start_gateway: StartGateway) -> None:
    """A CALL sent in several continuation frames is handled like a single frame."""
    text = json.dumps([2, "frag", *BOOT])
    pieces = [text[i : i + 10] for i in range(0, len(text), 10)]
    async with start_gateway() as g, connect(g.url()) as ws:
        await ws.send(pieces)  # websockets sends an iterable as one fragmented message
        answer = json.loads(await ws.recv())
        assert answer[:2] == [3, "frag"] and answer[2]["status"] == "Accepted"


async def test_fragmented_message_over_limit_closes_1009(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """Fragments that add up to more than max_message_size close the connection with 1009."""
    async with start_gateway(max_message_size=1024) as g:
        transport, listener = await picows_client(g.url())
        transport.send(WSMsgType.TEXT, b"[2," + b" " * 600, fin=False)
        transport.send(WSMsgType.CONTINUATION, b" " * 600, fin=True)
        await asyncio.wait_for(transport.wait_disconnected(), 5)
        assert listener.close_code == 1009


async def test_single_frame_over_limit_closes_1009(start_gateway: StartGateway) -> None:
    """One frame over max_message_size (default 64 KiB) closes with 1009."""
    async with start_gateway() as g, connect(g.url(), max_size=None) as ws:
        await ws.send(
            json.dumps([2, "big", "DataTransfer", {"vendorId": "v", "data": "x" * 70_000}])
        )
        assert await close_code_of(ws) == 1009


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (ws_frame(0x1, b'[2,"1","Heartbeat",{}]', mask=False), 1002),
        (ws_frame(0x8, (1004).to_bytes(2, "big")), 1002),  # a reserved close code
        (ws_frame(0x8, b"\x03\xe8\xff"), 1007),  # a close reason not UTF-8
        (ws_frame(0x1, b" " * 70_000), 1009),  # over max_message_size
    ],
    ids=["unmasked", "bad-close-code", "bad-close-reason", "oversize"],
)
async def test_frames_breaking_rfc6455_are_counted_not_logged_as_errors(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture, frame: bytes, code: int
) -> None:
    """picows's parser closes the connection with the RFC's code; a charger's mistake is a
    counted metric and a DEBUG line, never an ERROR (issue 15 item 5)."""
    caplog.set_level(logging.DEBUG, logger="evgate.gateway.picows")
    async with start_gateway() as g, raw_connect(g.url()) as client:
        client.send(frame)
        assert await client.close_code() == code
        errors = g.metrics.counter("evgate_websocket_errors_total", "", ("code",))
        await until(lambda: errors.value(str(code)) == 1)
    parser = [r for r in caplog.records if r.getMessage().startswith("WS parser error")]
    assert [r.levelno for r in parser] == [logging.DEBUG]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10])
async def test_rsv_bit_without_an_extension_closes_1002(
    start_gateway: StartGateway, bit: int
) -> None:
    """RFC 6455 5.2: an RSV bit set with no extension negotiated fails the connection with
    1002; the CALL it carries is not answered (issue 15 item 7)."""
    async with start_gateway() as g, raw_connect(g.url()) as client:
        client.send(ws_frame(0x1, b'[2,"ok","Heartbeat",{}]'))
        assert json.loads((await client.read_frame())[1])[:2] == [3, "ok"]
        frame = bytearray(ws_frame(0x1, b'[2,"rsv","Heartbeat",{}]'))
        frame[0] |= bit
        client.send(bytes(frame))
        assert await client.close_code() == 1002
        errors = g.metrics.counter("evgate_websocket_errors_total", "", ("code",))
        assert errors.value("1002") == 1


async def test_binary_frame_closes_1003(start_gateway: StartGateway) -> None:
    """OCPP-J is text only: a binary frame closes with 1003."""
    async with start_gateway() as g, connect(g.url()) as ws:
        await ws.send(b'[2, "1", "Heartbeat", {}]')
        assert await close_code_of(ws) == 1003


async def test_continuation_without_start_closes_1002(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """A continuation frame with no message to continue is a protocol error: 1002."""
    async with start_gateway() as g:
        transport, listener = await picows_client(g.url())
        transport.send(WSMsgType.CONTINUATION, b"[]", fin=True)
        await asyncio.wait_for(transport.wait_disconnected(), 5)
        assert listener.close_code == 1002


async def test_a_call_over_the_rate_while_another_is_unanswered_is_refused(
    start_gateway: StartGateway,
) -> None:
    """OCPP-J allows one outstanding CALL: beyond the burst, a CALL sent while an earlier one
    is still unanswered is answered GenericError (counted), not paced; the unanswered ones
    are answered in order once their handler returns."""
    release = asyncio.Event()

    async def stalled(ctx: ChargerContext, request: DataTransferRequest) -> DataTransferResponse:
        await release.wait()
        return DataTransferResponse(status=DataTransferStatus.accepted)

    routes: Routes = {"DataTransfer": stalled}
    async with (
        start_gateway(routes=routes, message_rate=1.0, message_burst=3) as g,
        connect(g.url()) as ws,
    ):
        for i in range(5):
            await ws.send(json.dumps([2, str(i), "DataTransfer", {"vendorId": "v"}]))
        refusals = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        assert [(a[0], a[1], a[2]) for a in refusals] == [
            (4, "3", "GenericError"),
            (4, "4", "GenericError"),
        ]
        release.set()
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
        assert [(a[0], a[1]) for a in answers] == [(3, "0"), (3, "1"), (3, "2")]
        refused = g.metrics.counter("evgate_messages_refused_total", "", ("reason",))
        assert refused.value("rate") == 2


async def test_a_charger_waiting_for_each_answer_is_paced_not_refused(
    start_gateway: StartGateway,
) -> None:
    """A charger that sends each CALL after the previous answer, faster than its message
    rate, gets every CALL answered (none refused), at the rate: 45 CALLs at 20/s after a
    burst of 5 take about 2 s."""
    async with (
        start_gateway(message_rate=20.0, message_burst=5) as g,
        connect(g.url()) as ws,
    ):
        started = asyncio.get_running_loop().time()
        for i in range(45):
            assert (await _exchange(ws, [2, str(i), "Heartbeat", {}]))[:2] == [3, str(i)]
        elapsed = asyncio.get_running_loop().time() - started
        refused = g.metrics.counter("evgate_messages_refused_total", "", ("reason",))
        paced = g.metrics.counter("evgate_messages_paced_total", "")
        assert refused.value("rate") == 0
        assert paced.value() >= 39
        assert elapsed >= (45 - 5 - 1) / 20.0


async def test_a_paced_charger_is_not_read_until_its_call_is_handled(
    start_gateway: StartGateway,
) -> None:
    """While a CALL over the rate waits for the bucket, evgate reads nothing more from that
    charger (what it floods meanwhile waits in the socket, at no cost to evgate); reading
    resumes when the CALL is handled."""
    async with (
        start_gateway(message_rate=0.25, message_burst=1) as g,
        connect(g.url()) as ws,
    ):
        assert (await _exchange(ws, [2, "1", "Heartbeat", {}]))[:2] == [3, "1"]
        socket = g.gateway._connections["CP-1"].transport.underlying_transport
        await ws.send(json.dumps([2, "2", "Heartbeat", {}]))  # over the rate: paced ~4 s
        await until(lambda: not socket.is_reading(), within=3)
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer[:2] == [3, "2"] and socket.is_reading()


async def test_a_call_paced_at_shutdown_is_left_unanswered(start_gateway: StartGateway) -> None:
    """A CALL still waiting for the bucket when evgate stops is not handled: unanswered (the
    charger sends it again to the next process), and the connection closes with 1001."""
    async with (
        start_gateway(message_rate=0.25, message_burst=1) as g,
        connect(g.url()) as ws,
    ):
        assert (await _exchange(ws, [2, "1", "Heartbeat", {}]))[:2] == [3, "1"]
        await ws.send(json.dumps([2, "2", "Heartbeat", {}]))  # over the rate: paced ~4 s
        paced = g.metrics.counter("evgate_messages_paced_total", "")
        await until(lambda: paced.value() == 1)
        await g.gateway.stop(grace=10)
        received = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                received.append(await asyncio.wait_for(ws.recv(), 10))
        assert received == [] and ws.close_code == 1001


async def test_picows_client_round_trip(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """A picows client (the bench's client) gets its Heartbeat answered."""
    async with start_gateway() as g:
        transport, listener = await picows_client(g.url())
        transport.send(WSMsgType.TEXT, b'[2,"p1","Heartbeat",{}]')
        answer = json.loads(await asyncio.wait_for(listener.messages.get(), 5))
        assert answer[:2] == [3, "p1"]


async def test_full_inbox_leaves_later_calls_unanswered(start_gateway: StartGateway) -> None:
    """While a handler is stalled, MAX_INBOX CALLs may wait; further ones are dropped without
    an answer (the charger resends them) and counted; the waiting ones are answered in order."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def stalled(ctx: ChargerContext, request: DataTransferRequest) -> DataTransferResponse:
        entered.set()
        await release.wait()
        return DataTransferResponse(status=DataTransferStatus.accepted, data=request.message_id)

    routes: Routes = {"DataTransfer": stalled}
    async with start_gateway(routes=routes) as g, connect(g.url()) as ws:

        async def send(n: int) -> None:
            payload = {"vendorId": "v", "messageId": str(n)}
            await ws.send(json.dumps([2, str(n), "DataTransfer", payload]))

        await send(0)
        await entered.wait()  # the worker holds CALL 0: the inbox is empty
        for n in range(1, MAX_INBOX + 3):
            await send(n)
        refused = g.metrics.counter("evgate_messages_refused_total", "", ("reason",))
        await until(lambda: refused.value("busy") == 2)
        release.set()
        answered = [json.loads(await asyncio.wait_for(ws.recv(), 5))[1] for _ in range(17)]
        assert answered == [str(n) for n in range(MAX_INBOX + 1)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)


async def test_text_frame_inside_a_fragmented_message_closes_1002(
    picows_client: PicowsClient, start_gateway: StartGateway
) -> None:
    """A new text message before the fragmented one is finished breaks RFC 6455: 1002."""
    async with start_gateway() as g:
        transport, listener = await picows_client(g.url())
        transport.send(WSMsgType.TEXT, b'[2, "1", ', fin=False)
        transport.send(WSMsgType.TEXT, b'[2, "2", "Heartbeat", {}]', fin=True)
        await asyncio.wait_for(transport.wait_disconnected(), 5)
        assert listener.close_code == 1002


class DeafListener(RecordingListener):
    """A client that ignores the server's CLOSE frame and keeps sending, as a broken or
    hostile charger may."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
        else:
            super().on_ws_frame(transport, frame)


@pytest.mark.parametrize("why", ["no_subprotocol", "secret_rotated"])
async def test_calls_after_the_servers_close_frame_are_not_handled(
    start_gateway: StartGateway, why: str
) -> None:
    """Once evgate has sent its CLOSE (no ocpp1.6 offered, credentials changed, ...), what
    the client still sends is discarded: no handler runs for a connection being closed."""
    handled: list[str] = []

    async def recording(ctx: ChargerContext, request: DataTransferRequest) -> DataTransferResponse:
        handled.append(request.vendor_id)
        return DataTransferResponse(status=DataTransferStatus.accepted)

    routes: Routes = {"DataTransfer": recording}
    headers = [] if why == "no_subprotocol" else [("Sec-WebSocket-Protocol", "ocpp1.6")]
    async with start_gateway(routes=routes) as g:
        transport, listener = await ws_connect(DeafListener, g.url(), extra_headers=headers)
        try:
            assert isinstance(listener, DeafListener)
            if why == "secret_rotated":
                await until(lambda: g.gateway.connection("CP-1") is not None)
                g.set("CP-1", secret="999999999999999999999999")
            await until(lambda: listener.close_code is not None)
            call_ = [2, "late", "DataTransfer", {"vendorId": "late"}]
            transport.send(WSMsgType.TEXT, json.dumps(call_).encode())
            await quiet_for(0.3)  # the late CALL is not handled
            assert handled == []
            assert listener.messages.empty()
        finally:
            transport.disconnect()
            await transport.wait_disconnected()


async def test_a_flood_of_junk_is_rate_limited_too(start_gateway: StartGateway) -> None:
    """Unreadable frames and replies nobody asked for take from the same message budget as
    CALLs: beyond it they get no answer (and no log line) and are counted; the connection
    stays up and answers CALLs again once the budget refills."""
    async with start_gateway(message_rate=50.0, message_burst=3) as g, connect(g.url()) as ws:
        for _ in range(3):
            await ws.send("not json")
        for _ in range(3):
            await ws.send(json.dumps([3, "nobody-asked", {}]))
            await ws.send("not json")
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
        assert all(a[:3] == [4, "-1", "FormationViolation"] for a in answers)
        refused = g.metrics.counter("evgate_messages_refused_total", "", ("reason",))
        await until(lambda: refused.value("rate") == 6)
        await asyncio.sleep(0.1)  # pacing: the budget refills at 50/s
        assert (await _exchange(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]
