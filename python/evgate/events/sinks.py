"""events room: where deliveries go — a webhook receiver (``events/http.py``) or Kafka brokers
(aiokafka).

The dispatcher owns the sinks: one :class:`WebhookSink` per webhook subscription (its own
connection pool, so a receiver that hangs ties up only its own connections) and one
:class:`KafkaProducers` for the process, holding one idempotent producer per distinct set of
brokers and connection settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import aiokafka
import certifi
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    ProducerClosed,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)

import evgate
from evgate.addresses import private_host
from evgate.events import http
from evgate.events.signing import hmac_with_state, standard_webhook_signature
from evgate.metrics import Registry
from evgate.outages import Dependency, RepeatFilter, quiet_repeats
from evgate.storage.deliveries import Delivery
from evgate.storage.kafka_settings import KafkaSettings
from evgate.storage.subscriptions import SubscriptionRow
from evgate.tasks import retrieve, service_task

__all__ = [
    "Attempt",
    "EventRecord",
    "KafkaProducers",
    "NotSent",
    "Produced",
    "ProducerReplaced",
    "WebhookSink",
    "check_aiokafka",
    "failure_text",
    "kafka_settings_key",
    "refused",
    "sent_again",
]

log = logging.getLogger(__name__)

_MAX_RETRY_AFTER = 86_400.0
_ERROR_SNIPPET = 200

# _discard() uses aiokafka's internals, as they are in this release (see there).
_AIOKAFKA_RELEASE = "0.14."


def check_aiokafka(version: str) -> None:
    """Refuse an aiokafka whose internals :func:`_discard` was not written for.

    Raises:
        ImportError: ``version`` is not the release the Kafka sink was written for.
    """
    if not version.startswith(_AIOKAFKA_RELEASE):
        raise ImportError(
            f"evgate's Kafka sink closes a replaced producer through aiokafka "
            f"{_AIOKAFKA_RELEASE}x internals (the sender, the message accumulator's batches); "
            f"aiokafka {version} is installed: install the version pyproject.toml pins, or "
            f"check evgate/events/sinks.py:_discard against this release and update the check"
        )


check_aiokafka(aiokafka.__version__)


class EventRecord(Protocol):
    """What a sink sends of an event (a lane's ``Delivery``, a stream's event): a Kafka
    record's value, a webhook's body."""

    @property
    def outbox_id(self) -> int: ...
    @property
    def event(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class Attempt(NamedTuple):
    """The outcome of one delivery attempt."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    # The receiver asked for this delay (429 / 503 with Retry-After), in seconds.
    retry_after: float | None = None
    # The receiver answered 410 Gone: the subscription is to be disabled.
    gone: bool = False
    duration_ms: float = 0.0
    # Not an attempt: the records were failed by a replaced producer (another lane's record
    # broke it); the lane sends them again at once, without counting a failed attempt.
    resend: bool = False


def _public_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """The webhook client's socket factory for a sub-operator's subscription: the address its
    callback URL's name resolved to, just before connecting, must not be private (api/targets.py
    refuses literal ones at creation; a name is only known here). The refusal is a failed
    attempt.

    Raises:
        OSError: the address is private.
    """
    family, type_, proto, _, address = addr_info
    if private_host(str(address[0])) is not None:
        # One text for every address of the name (happy eyeballs reports one error when all
        # are alike); the client shows it in the attempt's error.
        raise OSError(
            errno.EACCES,
            "refused: a loopback, private, link-local or reserved address"
            " (a sub-operator's subscription)",
        )
    return socket.socket(family=family, type=type_, proto=proto)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), _MAX_RETRY_AFTER)


class WebhookSink:
    """POSTs events to one subscription's callback URL, signed (see ``events/signing.py``).

    Headers: ``webhook-id`` (``evt_<outbox id>``, the same on every retry), ``webhook-timestamp``
    (Unix seconds of the attempt), ``webhook-signature`` (Standard Webhooks), ``X-Signature``
    (the catalog's, when the subscription was made with a token) and ``X-Timestamp`` (ISO 8601
    UTC). Redirects are not followed (a 3xx is a failed attempt); any 2xx is success.
    """

    def __init__(
        self,
        subscription: SubscriptionRow,
        timeout: float,
        max_connections: int,
        private_targets: bool = True,
    ):
        """A client of its own per subscription: its connections (at most ``max_connections``,
        one per lane in flight, kept alive) serve no other receiver, so one that hangs ties up
        only its own subscription. Made inside the running loop. ``private_targets`` false
        (``EVGATE_TENANT_PRIVATE_TARGETS`` unset): a sub-operator's subscription connects to no
        private address, whatever its name resolves to."""
        assert subscription.callback_url is not None
        self.url = subscription.callback_url
        self.secret = subscription.webhook_secret
        self.token_state = subscription.token_hmac_state
        # A URL the API took (any absolute http(s) URL with a host) that the client cannot
        # send to (a port out of range, a name IDNA cannot encode) is each attempt's error, as
        # aiohttp's InvalidUrlClientError was: an exception here would be retried for ever.
        self.client: http.Client | None = None
        self.unusable: str | None = None
        try:
            # The receiver is the operator's own system, named by URL: no proxy from the
            # environment is slipped in between (the client knows none). The answer is read
            # only for an error message: at most _ERROR_SNIPPET bytes of it.
            self.client = http.Client(
                self.url,
                timeout=timeout,
                max_connections=max_connections,
                # The same trust as before the moves from httpx and aiohttp: Mozilla's roots
                # (certifi), the hostname checked.
                ssl_context=ssl.create_default_context(cafile=certifi.where()),
                socket_factory=None
                if private_targets or subscription.sub_operator_id is None
                else _public_socket,
                headers={
                    "content-type": "application/json",
                    "user-agent": f"evgate/{evgate.__version__}",
                },
                max_body=_ERROR_SNIPPET,
            )
        except ValueError as exc:
            self.unusable = failure_text(exc)

    def headers(self, delivery: EventRecord, now: float) -> dict[str, str]:
        msg_id = f"evt_{delivery.outbox_id}"
        timestamp = int(now)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_webhook_signature(
                self.secret, msg_id, timestamp, delivery.payload
            ),
            "x-timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }
        if self.token_state is not None:
            headers["x-signature"] = hmac_with_state(self.token_state, delivery.payload).hex()
        return headers

    async def deliver(self, delivery: EventRecord) -> Attempt:
        started = time.perf_counter()
        if self.client is None:
            return Attempt(False, error=self.unusable, duration_ms=_ms(started))
        try:
            response = await self.client.post(delivery.payload, self.headers(delivery, time.time()))
        except TimeoutError as exc:
            return Attempt(False, error=f"timeout ({type(exc).__name__})", duration_ms=_ms(started))
        except http.HttpError as exc:
            return Attempt(False, error=failure_text(exc), duration_ms=_ms(started))
        elapsed = _ms(started)
        status, answer = response.status, response.headers
        if 200 <= status < 300:
            return Attempt(True, status, duration_ms=elapsed)
        text = response.body.decode("utf-8", "replace")
        if 300 <= status < 400:
            error = f"HTTP {status}: redirect to {answer.get('location', '?')!r} not followed"
        else:
            error = f"HTTP {status}: {text}".strip()
        return Attempt(
            False,
            status,
            error,
            retry_after=_retry_after(answer.get("retry-after")) if status in (429, 503) else None,
            gone=status == 410,
            duration_ms=elapsed,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def failure_text(exc: BaseException) -> str:
    """What an attempt's error records of ``exc`` (its type and message, at most 500
    characters)."""
    return f"{type(exc).__name__}: {exc}"[:500]


def kafka_settings_key(subscription: SubscriptionRow) -> tuple[Any, ...]:
    """What makes two subscriptions share a producer: brokers and every connection setting
    (the password by digest: the key is kept in memory and may show in logs)."""
    k = _settings(subscription)
    password = subscription.kafka_password or ""
    return (
        tuple(sorted(k.brokers)),
        k.security_protocol,
        k.mechanism,
        k.sasl_username,
        hashlib.sha256(password.encode()).hexdigest(),
        k.compression_codec,
    )


def _settings(subscription: SubscriptionRow) -> KafkaSettings:
    """A Kafka subscription's settings (only Kafka subscriptions reach the Kafka sink)."""
    assert subscription.kafka is not None, f"subscription {subscription.id} is not Kafka's"
    return subscription.kafka


class ProducerReplaced(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """What a record still held by a replaced producer fails with (its lane resends it)."""


def _kafka_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the brokers are unreachable or not answering (rather than that they
    refused a record, or the credentials). A record failed by a replaced producer says
    neither: it is only sent again."""
    if isinstance(exc, TimeoutError | OSError | KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and exc.retriable


class NotSent(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """A record kept back: an earlier one of its key was refused before it was sent (sent
    now, it would reach the topic ahead of that one)."""


# What a broker (or the client, before sending) refuses in a record itself, and would refuse
# again: the record goes to the lane path (a failed attempt, retried on the schedule, given up
# at its end). Any other failure says nothing about the record (brokers away, a producer that
# lost its sequence, a timeout): the record is sent again.
_REFUSALS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    PolicyViolationError,
    UnsupportedForMessageFormatError,
)


def refused(exc: BaseException | None) -> bool:
    """Whether ``exc`` refuses the record itself (see :data:`_REFUSALS`)."""
    return isinstance(exc, _REFUSALS)


def timed_out(exc: BaseException | None) -> bool:
    """Whether ``exc`` says a record was not acknowledged in time: the delivery timeout, or
    aiokafka's request timeout for a send that could not queue it (the partition's queue
    full behind an unanswered request). A smaller batch may pass where this one did not."""
    return isinstance(exc, TimeoutError | KafkaTimeoutError)


def sent_again(exc: BaseException | None) -> bool:
    """Whether ``exc`` only says that a replaced producer held the record: not an attempt of
    its own, the record is sent again at once."""
    return isinstance(exc, ProducerReplaced | ProducerClosed)


class Produced(NamedTuple):
    """The outcome of :meth:`KafkaProducers.produce`: per record, in the order given, None
    (acknowledged) or why not."""

    errors: list[Exception | None]
    duration_ms: float


def _broke(future: asyncio.Future[Any]) -> bool:
    """Whether a record's future failed in a way that spent its producer's sequence."""
    if future.cancelled():
        return False
    exc = future.exception()
    return exc is not None and not sent_again(exc)


async def _settled(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, whatever its outcome (read it from the future); a
    cancellation of the waiting task still propagates."""
    try:
        await future
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not future.cancelled() or (task is not None and task.cancelling()):
            raise
    except Exception:  # the outcome is the future's, read by the caller
        pass


def _unresolved(ended: BaseException | None, timeout: float) -> Exception:
    """What a record not acknowledged when the produce ended fails with."""
    if isinstance(ended, TimeoutError) or not isinstance(ended, Exception):
        return TimeoutError(f"not acknowledged within {timeout:g} s")
    return ended


# How much longer than the request timeout a new producer waits for the old one's close.
_CLOSE_MARGIN = 5.0
# The probe's name in the brokers' outage (see KafkaProducers.probe).
_PROBE = "the Kafka sink's probe"

# aiokafka logs an ERROR per reconnect attempt, thousands a second while a broker is down (its
# sender retries a leaderless partition's metadata without pause): one line a minute of each.
_AIOKAFKA_REPEATS = RepeatFilter()


class KafkaProducers:
    """One started, idempotent (``acks=all``) producer per distinct Kafka settings.

    A producer that cannot start (brokers down) is not kept; the next delivery tries again.
    A producer that lost a record (refused by a broker, given up while its partition had no
    leader, or not acknowledged within the delivery timeout) is replaced: aiokafka's
    idempotent producer has given that record a sequence number, the broker then waits for it
    for ever and refuses every later record of the partition (``OutOfOrderSequenceNumber``).
    What the old producer still held fails (an attempt marked ``resend``, not a failed one),
    and its lanes send it again at once with the new one, made when the old one has closed.
    """

    def __init__(
        self,
        request_timeout: float,
        delivery_timeout: float | None = None,
        metrics: Registry | None = None,
    ) -> None:
        self.request_timeout_ms = int(request_timeout * 1000)
        self.delivery_timeout = delivery_timeout or request_timeout
        self._metrics = metrics
        self._producers: dict[tuple[Any, ...], AIOKafkaProducer] = {}
        # A producer being started, per settings (one at a time: see producer()).
        self._starting: dict[tuple[Any, ...], asyncio.Task[AIOKafkaProducer]] = {}
        # Every start still running: also one whose settings retain() dropped meanwhile (no
        # longer in _starting), which close() must wait for as well.
        self._starts: set[asyncio.Task[AIOKafkaProducer]] = set()
        self._brokers: dict[tuple[Any, ...], Dependency] = {}
        # Settings whose brokers answered again after an outage (see returned()).
        self._returned: set[tuple[Any, ...]] = set()
        # Replaced producers being closed, with their settings (owned here: close() waits for
        # them, and producer() for those of its settings).
        self._closing: dict[asyncio.Task[None], tuple[Any, ...]] = {}
        quiet_repeats("aiokafka", _AIOKAFKA_REPEATS)

    def brokers(self, subscription: SubscriptionRow) -> Dependency:
        """The outage state of a subscription's brokers (one per distinct settings)."""
        key = kafka_settings_key(subscription)
        brokers = self._brokers.get(key)
        if brokers is None:
            names = ",".join(key[0]) or "?"
            brokers = self._brokers[key] = Dependency(f"Kafka brokers {names}", _kafka_outage)
            if self._metrics is not None:
                brokers.export(self._metrics)
        return brokers

    async def _closed(self, key: tuple[Any, ...]) -> None:
        """Wait until the replaced producers of ``key`` are closed: a request they still have
        in flight is answered (or times out) within the request timeout, and until then a
        record it holds may still reach the topic, after the lane has sent it and later ones
        through a new producer (a charger's events out of order)."""
        old = [task for task, of in self._closing.items() if of == key]
        if old:
            # Bounded (aiokafka bounds each request; this only guards against a hang).
            await asyncio.wait(old, timeout=self.request_timeout_ms / 1000 + _CLOSE_MARGIN)

    async def producer(self, subscription: SubscriptionRow) -> AIOKafkaProducer:
        key = kafka_settings_key(subscription)
        producer = self._producers.get(key)
        if producer is not None:
            return producer
        # Shielded: a start cancelled while aiokafka 0.14 asks its bootstrap broker for the
        # metadata leaves that connection open, with its read task, for ever (it closes it on
        # a failed request, not on a cancellation): a lane's delivery timeout or a shutdown
        # must not cancel it. _start bounds it itself, past the bootstrap's own bounds.
        return await asyncio.shield(self._starting_for(key, subscription))

    def prepare(self, subscription: SubscriptionRow) -> None:
        """Start the producer of a subscription's settings now, if there is none (a stream
        about to read its first batch: the start takes as long as reading a few thousand
        events). Its outcome is the next :meth:`producer` call's."""
        key = kafka_settings_key(subscription)
        if key not in self._producers:
            self._starting_for(key, subscription)

    def _starting_for(
        self, key: tuple[Any, ...], subscription: SubscriptionRow
    ) -> asyncio.Task[AIOKafkaProducer]:
        """The start of the producer of ``key``: the one running, or a new one."""
        start = self._starting.get(key)
        if start is None:
            start = service_task(self._start(key, subscription), name="kafka-producer-start")
            start.add_done_callback(retrieve)  # when every lane waiting for it was cancelled
            start.add_done_callback(self._starts.discard)
            self._starting[key] = start
            self._starts.add(start)
        return start

    async def _start(self, key: tuple[Any, ...], subscription: SubscriptionRow) -> AIOKafkaProducer:
        try:
            await self._closed(key)
            producer = self._make(subscription)
            quiet_repeats("aiokafka", _AIOKAFKA_REPEATS)  # loggers made on first use
            # aiokafka bounds the bootstrap (per broker: the connection, its version request,
            # the metadata request, each within the request timeout), but then asks for an
            # idempotent producer id without end while the broker it names cannot be reached
            # (advertised listeners wrong, or gone since): cancelled only once every bootstrap
            # has had its time, so never inside one.
            brokers = len(_settings(subscription).brokers)
            try:
                async with asyncio.timeout(
                    (3 * brokers + 1) * self.request_timeout_ms / 1000 + _CLOSE_MARGIN
                ):
                    await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            if self._starting.get(key) is asyncio.current_task():
                self._producers[key] = producer
            else:  # its settings were retained away meanwhile (retain(), close())
                self._discard_later(key, producer)
            return producer
        finally:
            if self._starting.get(key) is asyncio.current_task():
                del self._starting[key]

    def _make(self, subscription: SubscriptionRow) -> AIOKafkaProducer:
        k = _settings(subscription)
        protocol, codec = k.security_protocol, k.compression_codec
        options: dict[str, Any] = {
            "bootstrap_servers": list(k.brokers),
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if codec == "none" else codec,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": protocol,
            "client_id": f"evgate-{evgate.__version__}",
        }
        if protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context()
        if protocol.startswith("SASL_"):
            options["sasl_mechanism"] = k.mechanism
            options["sasl_plain_username"] = k.sasl_username
            options["sasl_plain_password"] = subscription.kafka_password
        return AIOKafkaProducer(**options)

    async def deliver(
        self, subscription: SubscriptionRow, charger_id: str, deliveries: Sequence[Delivery]
    ) -> tuple[int, Attempt]:
        """Send a lane's deliveries in order (record key: the charger id, so one partition and
        one order per charger). Returns how many of the first ones were acknowledged, and the
        attempt's outcome (the failure, if one was not). Takes at most the delivery timeout,
        after a replaced producer of the same settings closed (at most the request timeout)."""
        produced = await self.produce(
            subscription,
            deliveries,
            [charger_id.encode()] * len(deliveries),
            f"the Kafka sink (charger {charger_id!r})",
        )
        done = next((i for i, e in enumerate(produced.errors) if e is not None), len(deliveries))
        if done == len(deliveries):
            return done, Attempt(True, duration_ms=produced.duration_ms)
        exc = produced.errors[done]
        assert exc is not None
        attempt = Attempt(False, error=failure_text(exc), duration_ms=produced.duration_ms)
        return done, attempt._replace(resend=sent_again(exc))

    async def produce(
        self,
        subscription: SubscriptionRow,
        records: Sequence[EventRecord],
        keys: Sequence[bytes],
        seen_by: str,
    ) -> Produced:
        """Send ``records`` (with their ``keys``: a charger's id, so one partition and one
        order per charger) and wait for every acknowledgement, within the delivery timeout
        (after a replaced producer of the same settings closed: at most the request timeout,
        not counted). Returns each record's outcome.

        A record a broker refuses (:func:`refused`) breaks the producer's sequence: the
        producer is replaced at once, and what it still held fails with
        :class:`ProducerReplaced` (:func:`sent_again`). A record refused before it was sent
        (larger than a request) keeps the later records of its key back (:class:`NotSent`).
        Failures that say the brokers are away are reported to their :meth:`brokers` as seen
        by ``seen_by`` (the loop whose failures and successes open and close an outage).
        """
        settings = kafka_settings_key(subscription)
        # Not part of the attempt: waiting for another lane's broken producer is no failure.
        await self._closed(settings)
        started = time.perf_counter()
        topic = _settings(subscription).topic
        brokers = self.brokers(subscription)
        errors: list[Exception | None] = [None] * len(records)
        futures: dict[asyncio.Future[Any], int] = {}
        held: set[bytes] = set()  # keys with a record refused before it was sent
        producer: AIOKafkaProducer | None = None
        broken = False
        ended: BaseException | None = None
        try:
            # Bounded: while a partition has no leader, aiokafka retries without end (and an
            # idempotent producer never expires a batch whose leader is known): the lane or
            # stream would hold its lease past expiry and another process would send it too.
            async with asyncio.timeout(self.delivery_timeout):
                producer = await self.producer(subscription)
                for i, (record, key) in enumerate(zip(records, keys, strict=True)):
                    if key in held:
                        errors[i] = NotSent("an earlier record of its key was refused")
                        continue
                    try:
                        future = await producer.send(
                            topic,
                            record.payload,
                            key=key,
                            headers=[
                                ("notification", record.event.encode()),
                                ("event-id", f"evt_{record.outbox_id}".encode()),
                            ],
                        )
                    except KafkaError as exc:
                        if not refused(exc):
                            raise
                        errors[i] = exc  # refused by the client itself: no sequence spent
                        held.add(key)
                        continue
                    futures[future] = i
                # One after the other: a record's batch completes all its records at once,
                # so this waits once per batch, not once per record (asyncio.wait would hang
                # a callback on each of thousands of futures).
                for future in futures:
                    if not future.done():
                        await _settled(future)
                    if not broken and _broke(future):
                        # A lost record spent its sequence number: the broker would refuse
                        # every later record of the partition. Replaced now, so that what
                        # the producer still holds fails at once (sent again), rather than
                        # one by one with OutOfOrderSequenceNumber or the timeout.
                        broken = True
                        self._replace(settings, producer)
        except BaseException as exc:
            ended = exc
        for future, i in futures.items():
            if future.done() and not future.cancelled():
                errors[i] = future.exception()  # type: ignore[assignment]
            else:
                # Sent again from the first unacknowledged one (also after a cancellation):
                # their own outcomes no longer matter, but must be collected.
                future.add_done_callback(retrieve)
                errors[i] = _unresolved(ended, self.delivery_timeout)
        if ended is not None:
            if not isinstance(ended, Exception):
                raise ended
            given = set(futures.values())
            for i, error in enumerate(errors):
                if error is None and i not in given:  # not sent: the produce ended first
                    errors[i] = _unresolved(ended, self.delivery_timeout)
            if producer is not None and not broken and (given or isinstance(ended, TimeoutError)):
                self._replace(settings, producer)  # records in flight, or a send that hung
        failures = [e for e in errors if e is not None]
        outage = next((e for e in failures if _kafka_outage(e)), None)
        if ended is not None and _kafka_outage(ended):
            outage = ended
        if outage is not None:
            brokers.failed(outage, seen_by)
        elif not failures and brokers.ok(seen_by):
            self._returned.add(settings)
        return Produced(errors, _ms(started))

    def away(self) -> set[tuple[Any, ...]]:
        """The settings whose brokers are in an outage now."""
        return {key for key, brokers in self._brokers.items() if not brokers.available}

    def returned(self) -> set[tuple[Any, ...]]:
        """The settings whose brokers answered again, until :meth:`resumed` says their lanes
        were made due."""
        return set(self._returned)

    def resumed(self, keys: set[tuple[Any, ...]]) -> None:
        """The lanes of these settings were made due (see :meth:`returned`)."""
        self._returned -= keys

    async def probe(self, subscription: SubscriptionRow) -> None:
        """Try to reach a subscription's brokers (start its producer, within the delivery
        timeout) while they are away, so that their return is known before a lane's next
        scheduled retry (see :meth:`returned`)."""
        brokers = self.brokers(subscription)
        try:
            async with asyncio.timeout(self.delivery_timeout):
                await self.producer(subscription)
        except Exception as exc:
            if _kafka_outage(exc):
                brokers.failed(exc, _PROBE)
            return
        if brokers.ok(_PROBE, whole=True):
            self._returned.add(kafka_settings_key(subscription))

    def _replace(self, key: tuple[Any, ...], producer: AIOKafkaProducer) -> None:
        """Stop using ``producer`` (the next delivery starts a new one) and close it."""
        if self._producers.get(key) is producer:
            del self._producers[key]
            self._discard_later(key, producer)

    def _discard_later(self, key: tuple[Any, ...], producer: AIOKafkaProducer) -> None:
        task = service_task(_discard(producer), name="kafka-producer-close")
        self._closing[task] = key
        task.add_done_callback(self._forget_closed)

    def _forget_closed(self, task: asyncio.Task[None]) -> None:
        self._closing.pop(task, None)

    async def retain(self, keys: set[tuple[Any, ...]]) -> None:
        """Close the producers whose settings no subscription uses any more."""
        for key in [k for k in self._producers if k not in keys]:
            self._replace(key, self._producers[key])
        for key in [k for k in self._starting if k not in keys]:
            del self._starting[key]  # closed when it started (_start)
        for key in [k for k in self._brokers if k not in keys]:
            del self._brokers[key]
            self._returned.discard(key)

    async def close(self, grace: float = 5.0) -> None:
        """Close every producer: wait at most ``grace`` seconds for the starts still running,
        then at most ``grace`` for the producers closing (a hung broker's request in flight),
        cancelling what is left after each."""
        starting = set(self._starts)
        await self.retain(set())
        if starting:  # each closes what it started (_start), so that goes into _closing
            _, late = await asyncio.wait(starting, timeout=grace)
            for task in late:
                task.cancel()  # the one case left that may leak a bootstrap connection
            if late:
                await asyncio.wait(late)
        if self._closing:  # a producer a start handed over just now gets its whole grace
            _, late = await asyncio.wait(set(self._closing), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)


async def _discard(producer: AIOKafkaProducer) -> None:
    """Close ``producer`` without waiting for what it holds (``stop()`` would wait for every
    record to be acknowledged: for ever while a broker is away, or with a broken sequence).

    Uses aiokafka's internals (pinned to 0.14): first its sender stops (a request in flight
    ends within the request timeout), then every record it still holds fails with
    :class:`ProducerReplaced` (nothing of it is recorded as delivered: its lanes resend it),
    then it closes its connections.
    """
    sender = getattr(producer, "_sender", None)
    accumulator = getattr(producer, "_message_accumulator", None)
    with contextlib.suppress(Exception):
        if sender is not None:
            await sender.close()
    if accumulator is not None:
        # A batch put back for a retry keeps the callback that takes it out of the pending set
        # when it ends: it goes back in that set first, or failing it raises in the callback.
        queued = [b for queue in accumulator._batches.values() for b in queue]
        accumulator._pending_batches.update(b for b in queued if b.retry_count)
        accumulator.fail_all(ProducerReplaced("the producer was replaced"))
        # A queued batch's "drained" waiter fails too; nobody waits on it any more.
        for batch in queued:
            retrieve(batch._drain_waiter)
    with contextlib.suppress(Exception):
        await producer.stop()
    with contextlib.suppress(Exception):
        await producer.client.close()  # stop() skips it when it had begun before
