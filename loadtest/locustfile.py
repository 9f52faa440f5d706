"""loadtest: an OCPP 1.6J charger user for locust, for operators who already load-test with it.

Each locust user is one charger: it connects (subprotocol ``ocpp1.6``), sends BootNotification
and a StatusNotification for every connector, then charges session after session: Authorize,
StartTransaction, MeterValues every ``--meter-interval`` seconds (a Heartbeat when one is due),
StopTransaction, and idles between sessions (locust's ``wait_time``). Every CALL is reported
to locust as a request of type ``OCPP`` named after its action, with its round-trip time; a
CALLERROR or a timeout is a failure. The messages are the fleet simulator's
(``loadtest.messages``); each user speaks through evgate's protocol core in the charger role
(``evgate.protocol.endpoint``), which matches every reply to its CALL, as the simulator does.

Needs ``pip install 'evgate[loadtest]'`` (locust; the WebSocket client is websocket-client,
which locust itself depends on) and a source checkout. Run, for example::

    locust -f loadtest/locustfile.py --host ws://127.0.0.1:9000 \\
        --credentials chargers.csv --users 1000 --spawn-rate 50 --headless -t 10m

``--credentials`` is a file of ``id,secret`` lines (one per user; a locust process takes them
in order, so give each process of a distributed run its own file). Without it, users are
``--charger-prefix`` + a number and connect without a secret.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "python"):
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

import gevent  # noqa: E402
import websocket  # noqa: E402  (websocket-client, a dependency of locust; gevent-friendly)
from locust import User, between, events, task  # noqa: E402

from evgate.protocol.endpoint import (  # noqa: E402
    Endpoint,
    ErrorReply,
    IncomingCall,
    InvalidReply,
    Refusal,
    Reply,
    Role,
    UnreadableReply,
)
from evgate.protocol.errors import ActionNotImplementedError  # noqa: E402
from evgate.protocol.v16 import (  # noqa: E402
    AuthorizationStatus,
    AuthorizeRequest,
    AuthorizeResponse,
    BootNotificationResponse,
    ChargePointStatus,
    HeartbeatRequest,
    Message,
    StartTransactionResponse,
)
from loadtest import messages  # noqa: E402
from loadtest.cli import read_credentials  # noqa: E402

_numbers = itertools.count()
_credentials: list[tuple[str, str | None]] | None = None


def _options(parser: Any) -> None:
    parser.add_argument("--credentials", default="", help="file of 'id,secret' lines")
    parser.add_argument("--charger-prefix", default="LOCUST-", help="ids without --credentials")
    parser.add_argument("--connectors", type=int, default=2)
    parser.add_argument("--meter-interval", type=float, default=60.0)
    parser.add_argument("--meters-per-session", type=int, default=10)
    parser.add_argument("--sampled-values", type=int, default=4)
    parser.add_argument("--id-tag", default="SIM-TAG-0001")


# (cast: locust's EventHook is untyped, and absent when locust is not installed)
cast(Any, events.init_command_line_parser).add_listener(_options)


class OcppCharger(User):
    """One charger per user; see the module docstring."""

    wait_time = between(5, 30)  # idle between sessions

    def on_start(self) -> None:
        global _credentials
        options = self.environment.parsed_options
        self.options = options
        number = next(_numbers)
        if options.credentials:
            if _credentials is None:
                _credentials = read_credentials(Path(options.credentials))
            self.charger_id, secret = _credentials[number % len(_credentials)]
        else:
            self.charger_id, secret = f"{options.charger_prefix}{number:06d}", None
        self.number = number
        self.rng = random.Random(number)
        self.energy_wh = self.rng.randrange(0, 5_000_000)
        self.endpoint = Endpoint(Role.charger)
        query = f"?auth={secret}" if secret else ""
        assert self.host, "give the server as --host ws://HOST:PORT"
        self.ws = websocket.create_connection(
            f"{self.host.rstrip('/')}/cp/{self.charger_id}{query}",
            subprotocols=["ocpp1.6"],
            timeout=30,
        )
        boot = self.call("BootNotification", messages.boot(number))
        assert isinstance(boot, BootNotificationResponse)
        self.heartbeat_interval = boot.interval or 60
        self.next_heartbeat = time.monotonic() + self.heartbeat_interval
        for connector in range(options.connectors + 1):
            self.call("StatusNotification", messages.status(connector, ChargePointStatus.available))

    def on_stop(self) -> None:
        self.ws.close()

    def call(self, action: str, request: Message) -> Message:
        """Send a CALL, wait for its answer, report it to locust; returns the response.

        Raises:
            OcppError: a CALLERROR, an invalid or unreadable answer (reported as a failure).
        """
        endpoint = self.endpoint
        outgoing = endpoint.call(action, request)
        began = time.perf_counter()
        error: Exception | None = None
        response: Message | None = None
        length = 0
        try:
            self.ws.send(outgoing.data.decode())
            while True:
                text = self.ws.recv()
                happening = endpoint.receive(text)
                if isinstance(happening, IncomingCall):  # the server asks; this charger declines
                    refusal = ActionNotImplementedError("not simulated")
                    self.ws.send(endpoint.refuse(refusal, happening.unique_id).decode())
                elif isinstance(happening, Refusal) and happening.action is not None:
                    self.ws.send(happening.data.decode())  # a server CALL it cannot read
                elif isinstance(happening, Reply):
                    response, length = happening.response, len(text)
                    break
                elif isinstance(happening, ErrorReply):
                    error = happening.error.to_exception()
                    break
                elif isinstance(happening, (Refusal, UnreadableReply, InvalidReply)):
                    error = happening.error  # a frame it cannot read, an invalid answer
                    break
                # else an answer to an earlier CALL, after its failure: read on
        except (OSError, websocket.WebSocketException) as exc:
            error = exc
        finally:
            endpoint.abandon(outgoing)
        self.environment.events.request.fire(
            request_type="OCPP",
            name=action,
            response_time=(time.perf_counter() - began) * 1000,
            response_length=length,
            exception=error,
            context={"charger": self.charger_id},
        )
        if error is not None:
            raise error
        assert response is not None
        return response

    def _heartbeat_if_due(self) -> None:
        if time.monotonic() >= self.next_heartbeat:
            self.call("Heartbeat", HeartbeatRequest())
            self.next_heartbeat = time.monotonic() + self.heartbeat_interval

    @task
    def charge(self) -> None:
        """One session: Authorize, StartTransaction, MeterValues, StopTransaction."""
        o = self.options
        connector = self.rng.randint(1, o.connectors)
        self._heartbeat_if_due()
        self.call("StatusNotification", messages.status(connector, ChargePointStatus.preparing))
        auth = self.call("Authorize", AuthorizeRequest(id_tag=o.id_tag))
        assert isinstance(auth, AuthorizeResponse)
        if auth.id_tag_info.status != AuthorizationStatus.accepted:
            self.call("StatusNotification", messages.status(connector, ChargePointStatus.available))
            return
        start = self.call(
            "StartTransaction", messages.start_transaction(connector, o.id_tag, self.energy_wh)
        )
        assert isinstance(start, StartTransactionResponse)
        self.call("StatusNotification", messages.status(connector, ChargePointStatus.charging))
        power = self.rng.choice((3_700.0, 7_400.0, 11_000.0, 22_000.0))
        for _ in range(o.meters_per_session):
            gevent.sleep(o.meter_interval)  # yields to the other users
            self.energy_wh += int(power * o.meter_interval / 3600)
            self._heartbeat_if_due()
            self.call(
                "MeterValues",
                messages.meter_values(
                    connector,
                    start.transaction_id,
                    self.energy_wh,
                    power,
                    o.sampled_values,
                    self.rng,
                ),
            )
        self.call(
            "StopTransaction",
            messages.stop_transaction(start.transaction_id, o.id_tag, self.energy_wh),
        )
        self.call("StatusNotification", messages.status(connector, ChargePointStatus.finishing))
        self.call("StatusNotification", messages.status(connector, ChargePointStatus.available))
