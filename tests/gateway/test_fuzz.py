"""Fuzzed frames over real WebSockets to an in-process evgate (issue 15's acceptance): every
frame gets its documented answer, no connection is closed 1011, the log holds no ERROR and
no traceback.

A seeded generator (reproducible: the seed and the frame are in every assertion message)
mixes valid CALLs of every charger action with the mistakes the internet makes: junk bytes,
invalid UTF-8 in ids, actions and payloads, deep nesting, wrong types, integers beyond any
column, NUL escapes, broken envelopes, truncations, replies nobody asked for, oversize and
binary messages. After each frame a Heartbeat probe is sent: what arrives before the probe's
answer is the frame's answer (CALLs are answered in arrival order), so a frame that should be
answered gets exactly one answer, and a reply gets none. Bounded: at most ``MAX_FRAMES``
frames or ``BUDGET`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets

from evgate.protocol.errors import ErrorCode
from gateway.helpers import StartEvgate, connect

SEED = int(os.environ.get("EVGATE_FUZZ_SEED", "1515"))
MAX_FRAMES = 2000
BUDGET = 12.0  # seconds of fuzzing; the run stops at whichever limit comes first
MIN_FRAMES = 200  # fewer means the machine was too slow for the test to say much
FRAMES_PER_CONNECTION = 250

TIMESTAMP = "2024-05-01T12:00:00Z"
INTEGERS = [0, 1, -1, 7, 2**31 - 1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63, -(2**63) - 1]
INTEGERS += [10**30, -(10**30)]
ANSWERED_CODES = {code.value for code in ErrorCode} - {ErrorCode.internal_error.value}

Payload = dict[str, Any]


def _requests(rng: random.Random) -> list[tuple[str, Payload]]:
    """One valid request of each charger action (integers from the edges of every column)."""
    number = rng.choice(INTEGERS)
    sampled = {"value": rng.choice(["12.5", "-1", "1e999", "x"]), "unit": "Wh"}
    return [
        ("Heartbeat", {}),
        ("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}),
        (
            "StatusNotification",
            {"connectorId": number, "errorCode": "NoError", "status": "Available"},
        ),
        ("Authorize", {"idTag": "TAG1"}),
        ("DataTransfer", {"vendorId": "v", "messageId": "m", "data": "[[[{{\\"}),
        ("LogStatusNotification", {"status": "Uploaded", "requestId": number}),
        ("SignedFirmwareStatusNotification", {"status": "Installed", "requestId": number}),
        ("FirmwareStatusNotification", {"status": "Installed"}),
        ("DiagnosticsStatusNotification", {"status": "Idle"}),
        ("SecurityEventNotification", {"type": "Probe", "timestamp": TIMESTAMP}),
        (
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": number,
                "meterValue": [{"timestamp": TIMESTAMP, "sampledValue": [sampled]}],
            },
        ),
        (
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAG1", "meterStart": number, "timestamp": TIMESTAMP},
        ),
        ("StopTransaction", {"meterStop": number, "timestamp": TIMESTAMP, "transactionId": number}),
    ]


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _any_value(rng: random.Random) -> Any:
    return rng.choice([None, True, 0, -1.5, 1e300, "", "x" * 300, [], {}, [1, {"a": None}]])


def _nested(depth: int) -> bytes:
    return b'{"a":[' * (depth // 2) + b"1" + b"]}" * (depth // 2)


# A frame: its bytes, and what must come back: "answer" (one CALLRESULT or CALLERROR, to
# its id or "-1"), "none" (a reply: nothing), "any" (junk: at most one answer, to any id),
# "close <code>" (the connection closes with that code).
Frame = tuple[bytes, str]


def _frame(rng: random.Random, n: int) -> Frame:
    uid = f"f-{n}"
    action, payload = rng.choice(_requests(rng))
    call = _json([2, uid, action, payload])
    kind = rng.randrange(16)
    if kind <= 2:  # valid
        return call, "answer"
    if kind == 3:  # a wrong type or an extra field somewhere in the payload
        key = rng.choice([*payload, "extra"])
        return _json([2, uid, action, {**payload, key: _any_value(rng)}]), "answer"
    if kind == 4:  # invalid UTF-8 in the id, the action, a value or a key
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
        value = call.find(b'":"')
        spots = [call.index(b'"f-') + 2, call.index(b'"' + action.encode()) + 2]
        spots += [value + 3] if value > 0 else []
        at = rng.choice(spots)
        if rng.random() < 0.2:
            return call.replace(b"{", b'{"' + bad + b'":1,', 1).replace(b",}", b"}"), "answer"
        return call[:at] + bad + call[at:], "answer"
    if kind == 5:  # deep nesting, in the payload or bare
        depth = rng.choice([31, 33, 64, 999, 1000, 3000])
        if rng.random() < 0.5:
            return b'[2,"' + uid.encode() + b'","Heartbeat",' + _nested(depth) + b"]", "answer"
        return b"[" * depth + b"]" * depth, "answer"
    if kind == 6:  # junk bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120))), "any"
    if kind == 7:  # a valid frame cut short
        return call[: rng.randrange(len(call))], "answer"
    if kind == 8:  # a NUL in a text, or a number no float holds
        if rng.random() < 0.5:
            return _json([2, uid, "Authorize", {"idTag": "a\x00"}]), "answer"
        return call.replace(b"}", b',"x":1e999}', 1), "answer"
    if kind == 9:  # broken envelopes
        envelopes: list[Any] = [
            [2, uid, action],
            [2, uid, action, payload, 1],
            [2, 7, action, payload],
            [2, None, action, payload],
            [2, uid + "-" + "x" * 36, action, payload],  # echoed: PropertyConstraintViolation
            [True, uid, action, payload],
            [2.0, uid, action, payload],
            [9, uid, action, payload],
            [-1, uid],
            [2, uid, 7, payload],
            [2, uid, action, []],
            [],
            {},
            "text",
            12,
            None,
        ]
        return _json(rng.choice(envelopes)), "answer"
    if kind == 10:  # replies nobody asked for, readable or not
        replies = [
            _json([3, uid, payload]),
            _json([4, uid, "GenericError", "", {}]),
            _json([4, uid, "NoSuchCode", "x", {"a": [1]}]),
            b'[3,"' + uid.encode() + b'",{"k":"\xff"}]',
            b'[4,"' + uid.encode() + b'","GenericError","\xc3",{}]',
            b'[4,"' + uid.encode() + b'","GenericError","",' + _nested(80) + b"]",
            b'[3,"\xff",{}]',
            _json([3, 7, {}]),
            _json([4, uid]),
        ]
        return rng.choice(replies), "none"
    if kind == 11:  # an action that is not a charger's, or none at all
        name = rng.choice(["Reset", "Frobnicate", "", "heartbeat", "Heartbeat " * 9])
        return _json([2, uid, name, {}]), "answer"
    if kind == 12:  # unusual but valid JSON spellings
        spaced = b' [ 2 , "' + uid.encode() + b'" , "Heartbeat" , { } ] '
        escaped = _json([2, uid, "Authorize", {"idTag": "\u00e9\U0001f600"}])
        surrogate = b'[2,"' + uid.encode() + b'","Authorize",{"idTag":"\\ud800"}]'
        return rng.choice([spaced, escaped, surrogate]), "answer"
    if kind == 13 and rng.random() < 0.1:  # over the 64 KiB message limit
        return _json(
            [2, uid, "DataTransfer", {"vendorId": "v", "data": "x" * 70_000}]
        ), "close 1009"
    if kind == 14 and rng.random() < 0.1:
        return b"binary", "close 1003"
    if kind == 15:  # a few bytes of a valid frame changed: anything may come of it
        mutated = bytearray(call)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        return bytes(mutated), "any"
    return call, "answer"


def _check_answer(expect: str, answers: list[Any], uid: str) -> str | None:
    """What is wrong with ``answers`` to a frame sent with id ``uid`` that expects ``expect``
    (see ``Frame``), or None."""
    if expect == "none":
        return None if not answers else "a reply was answered"
    if expect == "any" and not answers:
        return None
    if len(answers) != 1:
        return f"{len(answers)} answers"
    answer = answers[0]
    if not isinstance(answer, list) or answer[:1] not in ([3], [4]):
        return "not a CALLRESULT or CALLERROR"
    # Its own id (lenient mode accepts, and strict mode echoes, an id over 36 characters).
    own = answer[1] == uid or str(answer[1]).startswith(uid + "-") or expect == "any"
    if answer[0] == 3:
        return None if len(answer) == 3 and own else "a CALLRESULT to another id"
    if len(answer) != 5 or answer[2] not in ANSWERED_CODES:
        return f"an undocumented CALLERROR {answer[2:4]}"
    if not own and answer[1] != "-1":
        return "a CALLERROR to another id"
    return None


async def test_fuzzed_frames_get_documented_answers_never_1011_nor_an_error_log(
    start_evgate: StartEvgate, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15's acceptance: a seeded mix of valid and broken frames over real WebSockets;
    each gets its documented answer (or close), never 1011, and nothing is logged at ERROR or
    with a traceback."""
    caplog.set_level(logging.INFO)
    rng = random.Random(SEED)
    closes: list[int | None] = []
    problems: list[str] = []
    sent = 0
    async with start_evgate(message_rate=1_000_000.0, message_burst=1_000_000) as running:
        # A strict charger and a lenient one (whose payloads take the repair path), in turn.
        urls = [running.url("CP-1", await running.add("CP-1"))]
        urls.append(running.url("CP-L", await running.add("CP-L", lenient=True)))
        started, connections = time.monotonic(), 0
        while sent < MAX_FRAMES and time.monotonic() - started < BUDGET:
            connections += 1
            async with connect(urls[connections % 2], max_size=None) as ws:
                probe = 0
                while probe < FRAMES_PER_CONNECTION and time.monotonic() - started < BUDGET:
                    if sent >= MAX_FRAMES:
                        break
                    frame, expect = _frame(rng, sent)
                    sent += 1
                    await ws.send(frame, text=frame != b"binary")
                    if expect.startswith("close"):
                        with pytest.raises(websockets.ConnectionClosed):
                            await ws.recv()
                        closes.append(ws.close_code)
                        if f"close {ws.close_code}" != expect:
                            problems.append(f"{frame[:80]!r}: closed {ws.close_code}, {expect}")
                        break
                    probe += 1
                    await ws.send(json.dumps([2, f"probe-{probe}", "Heartbeat", {}]))
                    answers = await _until_probe(ws.recv, f"probe-{probe}")
                    wrong = _check_answer(expect, answers, f"f-{sent - 1}")
                    if wrong is not None:
                        problems.append(f"{frame[:80]!r}: {wrong}: {answers!r:.200}")
    assert not problems, f"seed {SEED}: " + "\n".join(problems[:10])
    assert 1011 not in closes
    assert sent >= MIN_FRAMES, f"only {sent} frames in {BUDGET} s"
    bad_logs = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad_logs, [f"{r.name}: {r.getMessage()}" for r in bad_logs[:5]]


async def _until_probe(recv: Callable[[], Awaitable[Any]], probe: str) -> list[Any]:
    """The messages received before the answer to ``probe`` (5 s at most)."""
    answers: list[Any] = []
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await recv())
            if message[:2] == [3, probe]:
                return answers
            answers.append(message)
