"""Frames per second through evgate's protocol core against the ``ocpp`` library, same frames.

What is measured, per frame, on one core, for both contenders in the same run:

* evgate: what the gateway runs per frame: ``Endpoint.receive`` of the central system's
  endpoint (``frames.decode`` of the envelope, ``frames.decode_request`` of the payload into
  typed Structs, validated exactly as the official schemas say, date-times included), then
  ``Endpoint.respond`` (``frames.encode_result``) of a prebuilt response Struct.
* ocpp 2.x (mobilityhouse): ``ocpp.messages.unpack`` (json.loads), the schema validation
  that ``validate_payload`` runs (its synchronous core ``_validate_payload``: jsonschema
  Draft4Validator, no format checks; the public coroutine would add an executor hop per
  frame, which we leave out in the library's favour), then ``create_call_result`` and ``pack``
  (json.dumps) of a prebuilt response dict.

Neither validates its outgoing response. The mix is what a fleet sends (per 20 frames: 10
MeterValues with 10 sampled values each, 4 StatusNotification, 4 Heartbeat, one
StartTransaction, one StopTransaction with 2 transactionData entries of 3 sampled values).
Each contender runs for about ``--seconds`` per round; the best of ``--rounds`` is reported.

Run from the project venv: ``python bench/protocol.py`` (table) or ``--json`` (one object:
``evgate_fps``, ``ocpp_fps``, ``ratio``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import evgate.protocol  # noqa: F401
except ImportError:  # a plain checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from ocpp.messages import _validate_payload, pack, unpack

from evgate.protocol.endpoint import Endpoint, IncomingCall, Role
from evgate.protocol.v16 import (
    AuthorizationStatus,
    HeartbeatResponse,
    IdTagInfo,
    MeterValuesResponse,
    StartTransactionResponse,
    StatusNotificationResponse,
    StopTransactionResponse,
)

NOW = "2024-05-01T12:00:00.000Z"


def _sampled(i: int) -> dict[str, Any]:
    return {
        "value": f"{1000 + i * 7.5:.1f}",
        "context": "Sample.Periodic",
        "format": "Raw",
        "measurand": "Energy.Active.Import.Register" if i == 0 else "Power.Active.Import",
        "phase": ["L1", "L2", "L3"][i % 3],
        "location": "Outlet",
        "unit": "Wh" if i == 0 else "W",
    }


def build_frames() -> list[tuple[str, bytes]]:
    """The benchmark's frames, as (action, bytes), in the order they are replayed."""
    meter_values = {
        "connectorId": 1,
        "transactionId": 4242,
        "meterValue": [{"timestamp": NOW, "sampledValue": [_sampled(i) for i in range(10)]}],
    }
    status = {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Charging",
        "timestamp": NOW,
        "info": "plugged",
    }
    start = {"connectorId": 1, "idTag": "04E91C1A2B3C80", "meterStart": 12000, "timestamp": NOW}
    stop = {
        "transactionId": 4242,
        "idTag": "04E91C1A2B3C80",
        "meterStop": 19500,
        "timestamp": NOW,
        "reason": "EVDisconnected",
        "transactionData": [
            {"timestamp": NOW, "sampledValue": [_sampled(i) for i in range(3)]} for _ in range(2)
        ],
    }
    mix = (
        [("MeterValues", meter_values)] * 10
        + [("StatusNotification", status), ("Heartbeat", {})] * 4
        + [("StartTransaction", start), ("StopTransaction", stop)]
    )
    return [
        (action, json.dumps([2, f"{n:08d}-bench", action, payload], separators=(",", ":")).encode())
        for n, (action, payload) in enumerate(mix)
    ]


def evgate_runner(data: list[tuple[str, bytes]]) -> Callable[[], None]:
    """One pass over ``data`` with evgate: decode, validate, encode the response."""
    id_tag_info = IdTagInfo(status=AuthorizationStatus.accepted)
    responses = {
        "MeterValues": MeterValuesResponse(),
        "StatusNotification": StatusNotificationResponse(),
        "Heartbeat": HeartbeatResponse(current_time=datetime(2024, 5, 1, 12, tzinfo=UTC)),
        "StartTransaction": StartTransactionResponse(id_tag_info=id_tag_info, transaction_id=7),
        "StopTransaction": StopTransactionResponse(id_tag_info=id_tag_info),
    }
    endpoint = Endpoint(Role.central_system)
    receive, respond = endpoint.receive, endpoint.respond
    raw = [frame for _, frame in data]

    def run() -> None:
        for frame in raw:
            call = receive(frame)
            assert type(call) is IncomingCall
            respond(call.unique_id, responses[call.action])

    return run


def ocpp_runner(data: list[tuple[str, bytes]]) -> Callable[[], None]:
    """One pass over ``data`` with the ocpp library: unpack, validate, pack the response."""
    id_tag_info = {"status": "Accepted"}
    responses = {
        "MeterValues": {},
        "StatusNotification": {},
        "Heartbeat": {"currentTime": NOW},
        "StartTransaction": {"idTagInfo": id_tag_info, "transactionId": 7},
        "StopTransaction": {"idTagInfo": id_tag_info},
    }
    text = [frame.decode() for _, frame in data]

    def run() -> None:
        for frame in text:
            call = unpack(frame)
            _validate_payload(call, "1.6")
            pack(call.create_call_result(responses[call.action]))

    return run


def frames_per_second(run: Callable[[], None], per_pass: int, seconds: float, rounds: int) -> float:
    """Best frames/s of ``rounds`` rounds of about ``seconds`` each."""
    run()  # warm caches (validators, decoders)
    best = 0.0
    for _ in range(rounds):
        passes = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            run()
            passes += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, passes * per_pass / (now - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best counts")
    args = parser.parse_args(argv)

    data = build_frames()
    evgate_fps = frames_per_second(evgate_runner(data), len(data), args.seconds, args.rounds)
    ocpp_fps = frames_per_second(ocpp_runner(data), len(data), args.seconds, args.rounds)
    ratio = evgate_fps / ocpp_fps
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "protocol decode+validate+encode, fleet mix",
                    "frames_per_pass": len(data),
                    "evgate_fps": round(evgate_fps),
                    "ocpp_fps": round(ocpp_fps),
                    "ratio": round(ratio, 1),
                }
            )
        )
    else:
        print(f"{'contender':<12}{'frames/s':>14}{'µs/frame':>12}")
        for name, fps in (("evgate", evgate_fps), ("ocpp 2.x", ocpp_fps)):
            print(f"{name:<12}{fps:>14,.0f}{1e6 / fps:>12.2f}")
        print(f"ratio evgate/ocpp: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
