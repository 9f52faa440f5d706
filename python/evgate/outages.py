"""Outages of what a process depends on (PostgreSQL, Kafka brokers), shared by every room.

An outage is not an error of evgate's: it costs one WARNING when the dependency goes away and
one INFO when it answers again, never a traceback per retry, and it is counted in metrics.

* :class:`Dependency` is one thing depended on, as this process sees it: available or away.
  Every component that uses it reports to the same object (``Database.health`` for
  PostgreSQL, one per set of brokers in the Kafka sink), so an outage seen by ten loops is
  still two lines. ``export(registry)`` puts its figures on ``/metrics``.
* :class:`Retry` is one background loop's handle on a dependency: ``failed(exc)`` reports a
  failure and returns how long to back off (doubling up to a bound), ``ok()`` a success. An
  exception that is not an outage (a bug) is logged with its traceback, also backed off.
* A partial outage (PostgreSQL refusing new connections while open ones still work; one
  broker of three down) is still one outage: it ends when every component that failed has
  succeeded since, or when nothing failed for ``quiet`` seconds, not at the first success of
  any component (which would log WARNING and INFO in turn for as long as it lasts).
* :class:`RepeatFilter` is a logging filter that lets a library's repeated line through once a
  minute (aiokafka logs an ERROR per reconnect attempt: thousands a second while a broker is
  down; asyncpg's pool a traceback per failed reconnect).

Usage::

    retry = db.health.retry("session-end sender", log)
    while True:
        try:
            await work()
        except Exception as exc:
            await asyncio.sleep(retry.failed(exc))
            continue
        retry.ok()
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from evgate.metrics import Registry

__all__ = ["Dependency", "RepeatFilter", "Retry", "quiet_repeats"]

log = logging.getLogger(__name__)


class Dependency:
    """One dependency of this process: it goes away (an outage) and comes back.

    Args:
        name: how the log lines and the metrics name it ("PostgreSQL", "Kafka brokers a:9092").
        is_outage: whether an exception says the dependency is unavailable (rather than that
            the request was wrong, or evgate has a bug).
        quiet: seconds without a failure after which any success ends an outage, also when a
            component that failed has not succeeded since (it may never run again: a one-off
            task). Longer than a :class:`Retry`'s longest backoff, so that a component still
            failing keeps the outage open.
    """

    def __init__(
        self, name: str, is_outage: Callable[[BaseException], bool], quiet: float = 10.0
    ) -> None:
        self.name = name
        self.is_outage = is_outage
        self.quiet = quiet
        self.available = True
        self.outages = 0  # how many times it went away
        self.failures = 0  # failed attempts while away
        self._since = 0.0
        self._last_failure = 0.0
        # The components that failed in this outage and have not succeeded since.
        self._failing: set[str] = set()
        self._registry: Registry | None = None

    def export(self, registry: Registry) -> None:
        """Publish the figures: ``evgate_dependency_up``, ``evgate_dependency_outages_total``
        and ``evgate_dependency_failures_total``, labelled with the name."""
        self._registry = registry
        self._publish()

    def _publish(self) -> None:
        if self._registry is None:
            return
        r = self._registry
        r.gauge(
            "evgate_dependency_up", "1 while the dependency answers, 0 during an outage", ("name",)
        ).set(1 if self.available else 0, self.name)
        outages = r.counter(
            "evgate_dependency_outages_total", "Times the dependency went away", ("name",)
        )
        outages.inc(self.name, amount=self.outages - outages.value(self.name))
        failures = r.counter(
            "evgate_dependency_failures_total",
            "Attempts that failed because the dependency was away",
            ("name",),
        )
        failures.inc(self.name, amount=self.failures - failures.value(self.name))

    def failed(self, exc: BaseException, seen_by: str) -> None:
        """An outage seen by ``seen_by``: logs a WARNING if it is the start of one."""
        self.failures += 1
        self._last_failure = time.monotonic()
        self._failing.add(seen_by)
        if self.available:
            self.available = False
            self.outages += 1
            self._since = time.monotonic()
            log.warning(
                "%s unavailable (%s, seen by %s); retrying with backoff",
                self.name,
                describe(exc),
                seen_by,
            )
        self._publish()

    def ok(self, seen_by: str | None = None, whole: bool = False) -> bool:
        """It answered ``seen_by`` (the name it gave :meth:`failed`): logs an INFO if this ends
        an outage. ``whole``: the success was a check of the whole dependency (a Kafka sink's
        probe: brokers, metadata and a producer id), which ends it whoever failed. Returns
        whether it ended (it came back)."""
        if self.available:
            return False
        if seen_by is not None:
            self._failing.discard(seen_by)
        if not whole and self._failing and time.monotonic() - self._last_failure < self.quiet:
            return False  # a partial outage: a component that failed still does
        self.available = True
        self._failing.clear()
        log.info(
            "%s available again after %.1f s of outage", self.name, time.monotonic() - self._since
        )
        self._publish()
        return True

    def report(self, exc: BaseException, seen_by: str, logger: logging.Logger) -> None:
        """A failure seen by ``seen_by``: an outage is :meth:`failed`; anything else is a bug
        and ``logger`` logs it with its traceback."""
        if self.is_outage(exc):
            self.failed(exc, seen_by)
        else:
            logger.error("%s failed", seen_by, exc_info=exc)

    def retry(
        self, component: str, logger: logging.Logger, first: float = 0.5, most: float = 5.0
    ) -> Retry:
        """A handle for one loop of ``component``, backing off from ``first`` to ``most`` s (a
        short bound: the log says an outage once however often a loop retries, and a loop
        resumes its work within ``most`` seconds of the dependency's return)."""
        return Retry(self, component, logger, first, most)


class Retry:
    """One loop's reports to a :class:`Dependency`, and its backoff (made by
    :meth:`Dependency.retry`). After a failure, wait ``failed(exc)`` seconds; after a success,
    call ``ok()``."""

    def __init__(
        self,
        dependency: Dependency,
        component: str,
        logger: logging.Logger,
        first: float,
        most: float,
    ) -> None:
        self.dependency = dependency
        self.component = component
        self.logger = logger
        self.first = first
        self.most = most
        self._delay = first

    def failed(self, exc: BaseException) -> float:
        """Report a failed attempt; returns the seconds to wait before the next one."""
        delay = self._delay * random.uniform(0.8, 1.2)
        self._delay = min(self._delay * 2, self.most)
        if self.dependency.is_outage(exc):
            self.dependency.failed(exc, self.component)
        else:
            self.logger.error("%s failed; retrying in %.1f s", self.component, delay, exc_info=exc)
        return delay

    def ok(self) -> None:
        """Report a successful attempt: the backoff starts over."""
        self._delay = self.first
        self.dependency.ok(self.component)


def describe(exc: BaseException) -> str:
    """An exception in one line, for a log line without a traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class RepeatFilter(logging.Filter):
    """Lets the same line (logger and message template) through once per ``interval``
    seconds; the next one that passes says how many were held back."""

    def __init__(self, interval: float = 60.0, keep: int = 1000, tracebacks: bool = True) -> None:
        super().__init__()
        self.interval = interval
        self.keep = keep
        # Without tracebacks, a line that has one says its exception in a few words instead.
        self.tracebacks = tracebacks
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= self.keep:
            self._seen.clear()  # a bound on memory; forgetting only lets a line through early
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{last[1]} more like it in the last {now - last[0]:.0f} s]"
        if not self.tracebacks and record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                record.msg = f"{record.msg} ({describe(exc)})"
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_repeats(prefix: str, repeat_filter: RepeatFilter) -> None:
    """Put ``repeat_filter`` on every logger named ``prefix`` or ``prefix.*`` that exists now.

    A logger's filters see only what that logger itself logs (not its children's records), so
    each library logger gets it; call again after importing more of the library.
    """
    manager = logging.Logger.manager
    for name in [prefix, *manager.loggerDict]:
        if name != prefix and not name.startswith(prefix + "."):
            continue
        logger = logging.getLogger(name)
        if repeat_filter not in logger.filters:
            logger.addFilter(repeat_filter)
