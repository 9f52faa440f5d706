"""auth room: delivering session ends to installations' providers, durably.

A committed stop at a charger whose installation has a ``sessionEndUrl`` leaves a row in the
``auth_session_ends`` outbox, written in the stop's own transaction by a trigger on
``transactions`` (``storage/migrations/0005_auth.sql``), which also sends
``NOTIFY evgate_session_end`` (pass it to :meth:`SessionEndSender.wake`).

:class:`SessionEndSender` claims due rows (a lease, so several evgate processes never send
one row at once and a killed process's rows are retried after the lease), POSTs each to the
provider, deletes it on a 2xx, and otherwise retries it with exponential backoff, without
limit and across restarts, since the row is the state. Delivery is at least once: a provider
must treat a repeated ``transactionId`` as the same end. Rows of a deleted installation are
dropped (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from evgate.auth.installations import AuthorizerDirectory
from evgate.auth.webhook import ProviderError
from evgate.storage.errors import NotFound
from evgate.storage.installations import InstallationStore, SessionEndRow
from evgate.tasks import OwnedTask

__all__ = ["SessionEndSender", "retry_delay"]

log = logging.getLogger(__name__)


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: exponential from
    ``base``, capped at ``cap``, with jitter (half to all of it) so that ends queued while a
    provider was down do not all come back at the same instant.

    (events/dispatcher.retry_delay walks a finite schedule and then gives up; session ends
    are retried without end, hence this rule.)
    """
    delay: float = min(cap, base * 2.0 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)


class SessionEndSender:
    """Owns one task that delivers the session-end outbox. ``start()`` / ``await stop()``;
    :meth:`wake` after committing a row to send it without waiting for the next poll.

    Args:
        store: the outbox's queries.
        directory: the installations' authorizers (their credentials and token caches).
        retry_base: the first retry's delay in seconds; doubled per failed attempt.
        retry_max: the longest delay between attempts.
        poll_interval: how often the outbox is looked at when nothing wakes the sender (rows
            written by other processes, rows whose retry time came).
        batch: rows claimed at once; they are sent concurrently.
    """

    # A claimed row is someone's for this long; longer than a delivery can take
    # (WebhookAuthorizer.END_TIMEOUT_SECONDS, token fetch included).
    LEASE_SECONDS = 60.0
    # The shortest pause between two looks at the outbox when nothing woke the sender.
    MIN_WAIT_SECONDS = 0.1

    def __init__(
        self,
        store: InstallationStore,
        directory: AuthorizerDirectory,
        *,
        retry_base: float = 2.0,
        retry_max: float = 900.0,
        poll_interval: float = 2.0,
        batch: int = 50,
    ) -> None:
        self.store = store
        self.directory = directory
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.poll_interval = poll_interval
        self.batch = batch
        self._wake = asyncio.Event()
        self._task = OwnedTask(self._run, "auth-session-ends")

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        """Stop sending. Rows being sent stay leased and are retried after the lease."""
        await self._task.stop()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        retry = self.store.db.health.retry("the session-end sender", log, first=1.0)
        while True:
            backoff = 0.0
            try:
                sent = await self.send_due()
            except Exception as exc:
                backoff = retry.failed(exc)
                sent = 0
            else:
                retry.ok()
            if sent >= self.batch:
                continue  # more may be due at once
            wait = max(self.poll_interval, backoff)
            with contextlib.suppress(Exception):  # a failed read just means a full wait
                due = await self.store.next_session_end_due()
                if due is not None:
                    # A row due now that this round did not claim is being claimed by another
                    # process (SKIP LOCKED): look again shortly, never in a tight loop.
                    wait = min(wait, max(due, self.MIN_WAIT_SECONDS))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    async def send_due(self) -> int:
        """Claim the due rows and send them; returns how many were claimed."""
        rows = await self.store.claim_session_ends(self.batch, self.LEASE_SECONDS)
        if rows:
            async with asyncio.TaskGroup() as group:
                for row in rows:
                    group.create_task(self._deliver(row))
        return len(rows)

    async def _deliver(self, row: SessionEndRow) -> None:
        webhook = self.directory.webhook(row.installation_id)
        if webhook is None:
            # This process may not have heard of a new installation yet: ask the database.
            try:
                await self.store.get(row.installation_id)
            except NotFound:
                log.warning(
                    "session end %d dropped: installation %d no longer exists",
                    row.id,
                    row.installation_id,
                )
                await self.store.session_end_delivered(row.id)
                return
            await self.directory.refresh(f"i:{row.installation_id}")
            webhook = self.directory.webhook(row.installation_id)
        try:
            if webhook is None or not webhook.reports_ends:
                # Kept (an operator may turn webhook mode back on); visible in the API.
                raise ProviderError("http_status", "installation has no sessionEndUrl now")
            await webhook.report_end(row.payload)
        except ProviderError as exc:
            delay = retry_delay(row.attempts, self.retry_base, self.retry_max)
            log.warning(
                "session end %d for installation %d: attempt %d failed (%s); next in %.1f s",
                row.id,
                row.installation_id,
                row.attempts,
                exc,
                delay,
            )
            await self.store.session_end_failed(row.id, delay, str(exc))
            return
        await self.store.session_end_delivered(row.id)
