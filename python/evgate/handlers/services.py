"""handlers room: what the handlers use — the writer, the stores, the authorizers — and the
checks every handler shares, and how a handler writes state with its events (:meth:`emit`).

``app.py`` builds one :class:`HandlerServices` and passes it to ``build_routes``; tests build
their own with a real writer and database.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from evgate.auth.authorizer import AuthorizationQuestion, Authorizer, Decision, Purpose
from evgate.handlers import ChargerContext
from evgate.handlers.smart_charging import SmartCharging
from evgate.pricing import Driver, Snapshot
from evgate.protocol.errors import PropertyConstraintViolationError
from evgate.protocol.v16 import (
    INT32_MAX,
    AuthorizationStatus,
    DataTransferRequest,
    DataTransferResponse,
    IdTagInfo,
)
from evgate.storage.ops import outbox
from evgate.storage.ops.base import Results, Write
from evgate.storage.ops.connectors import ConnectorStatus
from evgate.storage.ops.transactions import TransactionFacts, TransactionStart
from evgate.storage.transactions import TransactionStore, closed_transaction
from evgate.storage.writer import Writer

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "METER_MAX",
    "HandlerServices",
    "VendorHandler",
    "check_range",
    "id_tag_info",
    "utc_now",
]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
#: The bound of a meter reading (meterStart, meterStop), either sign: ±(2^62-1) Wh keeps the
#: difference of any two within bigint (a CDR's energy), and no meter comes near it.
METER_MAX = 2**62 - 1

# Per connection, the transactions a handler has seen (id → what the session events say, or
# None: not an open transaction of this charger), so that MeterValues reads the database at
# most once per transaction and connection. Bounded: a charger may send any ids.
_TRANSACTIONS = "transactions"
_MAX_REMEMBERED = 64


class _Remembered(dict[int, TransactionFacts | None]):
    """A connection's remembered transactions (a dict that HandlerServices can refer to
    weakly, so that it dies with its connection)."""


#: A DataTransfer handler for one vendorId: its answer is sent to the charger.
VendorHandler = Callable[[ChargerContext, DataTransferRequest], Awaitable[DataTransferResponse]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class HandlerServices:
    """The handlers' dependencies.

    Attributes:
        writer: the group-commit writer (every state change goes through it).
        transactions: transaction reads (the concurrent-transaction check).
        authorizer_for: the authorizer of a charger (its installation's, or the native list).
        heartbeat_interval: seconds, sent in BootNotification.conf.
        allow_concurrent_tx: whether an id-tag may have several open transactions; when not,
            Authorize and StartTransaction answer ``ConcurrentTx`` for one that has.
        vendors: DataTransfer handlers by vendorId; any other vendorId is ``UnknownVendorId``.
        clock: the current time (UTC), replaceable in tests.
        tariff_for: the tariff snapshot for a StartTransaction (see the attribute).
        after_accepted_boot: called with the charger's id when a BootNotification is being
            answered Accepted (the offline-configuration push of ``auth/``). It must only
            queue work: it runs before the handler returns, and the gateway sends the
            CALLRESULT right after that without yielding to the loop, so anything it has sent
            to the charger goes after the Accepted reply.
        status_changed: called with a StatusNotification's stored status once it committed
            and changed the connector's status (the API's live feed). It must not block.
    """

    writer: Writer
    transactions: TransactionStore
    authorizer_for: Callable[[str], Authorizer]
    heartbeat_interval: int = 60
    allow_concurrent_tx: bool = True
    vendors: Mapping[str, VendorHandler] = field(default_factory=dict)
    clock: Callable[[], datetime] = utc_now
    after_accepted_boot: Callable[[str], None] = lambda _charger_id: None
    status_changed: Callable[[ConnectorStatus], None] = lambda _status: None
    # The tariff a transaction starting at a charger gets (charger id, the id-tag's group
    # and owner, start time): an in-memory lookup (storage/pricing.py), None when none
    # applies.
    tariff_for: Callable[[str, Driver, datetime], Snapshot | None] = (
        lambda _charger_id, _driver, _at: None
    )
    #: The smart-charging engine (load management), told of starts, stops, statuses and
    #: meter values; None without one (app.py sets it once the gateway is up).
    load: SmartCharging | None = None
    # The remembered transactions of each charger's latest connection in this process (see
    # transaction_closed).
    _remembered: weakref.WeakValueDictionary[str, _Remembered] = field(
        default_factory=weakref.WeakValueDictionary, init=False, repr=False
    )

    async def decide(
        self,
        charger_id: str,
        id_tag: str,
        *,
        connector_id: int | None = None,
        timestamp: datetime | None = None,
        check_concurrent: bool = True,
        besides: TransactionStart | None = None,
        purpose: Purpose = "authorize",
        transaction_id_tag: str | None = None,
    ) -> Decision:
        """Ask the charger's authorizer about ``id_tag`` for ``purpose`` (a StopTransaction's
        also gives the id-tag that started the transaction). Without concurrent transactions
        allowed (and ``check_concurrent``), an Accepted id-tag that has an open transaction,
        other than the one ``besides`` keys (a resent StartTransaction), is ``ConcurrentTx``.
        """
        question = AuthorizationQuestion(
            charger_id=charger_id,
            id_tag=id_tag,
            connector_id=connector_id,
            timestamp=timestamp,
            purpose=purpose,
            transaction_id_tag=transaction_id_tag,
        )
        decision = await self.authorizer_for(charger_id).authorize(question)
        if (
            decision.status == "Accepted"
            and check_concurrent
            and not self.allow_concurrent_tx
            and await self.transactions.has_open(id_tag, besides)
        ):
            decision = msgspec.structs.replace(decision, status="ConcurrentTx")
        return decision

    async def emit(
        self,
        charger_id: str,
        writes: Sequence[Write[Any]],
        then: Sequence[Write[Any]] | Callable[[Results], Sequence[Write[Any]]],
    ) -> Results:
        """Write state and the events describing it in one submission (one transaction), and
        return the ``writes``' results (each read by its write) once it committed.

        Args:
            charger_id: whose writes these are (the writer's key: in order with the rest of the
                charger's).
            writes: the state writes (the ones whose results the events depend on, and the
                others of the same transaction: every meter value goes through here, so that
                EMIT merges a batch's meter rows into one COPY whatever events they have).
            then: the follow-up writes (``storage.ops.outbox.append``, a CDR), or a pure
                function of the ``writes``' results that makes them (see
                ``storage.ops.outbox.Emission``).
        """
        [results] = await self.writer.submit([outbox.emit(writes, then)], key=charger_id)
        return results  # type: ignore[no-any-return]

    async def open_transaction(
        self, ctx: ChargerContext, transaction_id: int
    ) -> TransactionFacts | None:
        """The charger's open transaction ``transaction_id`` as the session events describe
        it (remembered per connection; read from the database once), or None."""
        known = self._known(ctx)
        if transaction_id in known:
            return known[transaction_id]
        tx = await self.transactions.open_of(ctx.charger_id, transaction_id)
        if transaction_id in known:  # closed meanwhile (transaction_closed)
            return known[transaction_id]
        self.remember_transaction(ctx, transaction_id, tx)
        return tx

    def remember_transaction(
        self, ctx: ChargerContext, transaction_id: int, tx: TransactionFacts | None
    ) -> None:
        """Remember what this connection knows of a transaction (None: not open here)."""
        _remember(self._known(ctx), transaction_id, tx)

    def refresh_transaction(self, ctx: ChargerContext, tx: TransactionFacts) -> None:
        """Remember ``tx``'s latest facts if this connection still takes it for open: not
        after it was closed while the handler that read it waited for the writer."""
        known = self._known(ctx)
        if known.get(tx.transaction_id) is not None:
            known[tx.transaction_id] = tx

    def transaction_closed(self, charger_id: str, transaction_id: int) -> None:
        """A transaction of ``charger_id`` was closed other than by its StopTransaction (the
        operator's stop, ``api/charging.py``), and committed: the charger's connection in this
        process takes it for closed from now on (its MeterValues make no events of a running
        transaction), and load management lets its connector's share go.

        Called by the API of this process after the stop, and in every process by the stop's
        notification (:meth:`transaction_stop_notified`): the process that holds the charger
        may be another. Calling it again changes nothing.
        """
        known = self._remembered.get(charger_id)
        if known is not None:
            _remember(known, transaction_id, None)
        if self.load is not None:
            self.load.transaction_stopped(charger_id, transaction_id)

    def transaction_stop_notified(self, payload: str) -> None:
        """A ``TRANSACTION_STOP_CHANNEL`` notification (``storage/transactions.py``): the
        operator closed a transaction through the API of some process; see
        :meth:`transaction_closed`."""
        closed = closed_transaction(payload)
        if closed is not None:
            self.transaction_closed(closed.charger_id, closed.transaction_id)

    def transaction_stops_missed(self) -> None:
        """Stop notifications may have been missed (the LISTEN connection was lost): each
        charger's connection here forgets which transactions it took for open, and reads each
        again from the database at its next message that names it; load management asks the
        database which of those it counts are still open."""
        for known in list(self._remembered.values()):
            for transaction_id in [t for t, tx in known.items() if tx is not None]:
                del known[transaction_id]
        if self.load is not None:
            self.load.transaction_stops_missed()

    def _known(self, ctx: ChargerContext) -> _Remembered:
        known: _Remembered | None = ctx.state.get(_TRANSACTIONS)
        if known is None:
            known = ctx.state[_TRANSACTIONS] = _Remembered()
            self._remembered[ctx.charger_id] = known
        return known


def _remember(known: _Remembered, transaction_id: int, tx: TransactionFacts | None) -> None:
    if len(known) >= _MAX_REMEMBERED and transaction_id not in known:
        known.clear()
    known[transaction_id] = tx


def id_tag_info(
    status: str, expiry_date: datetime | None = None, parent_id_tag: str | None = None
) -> IdTagInfo:
    """An idTagInfo (absent optional fields omitted, never null)."""
    info: dict[str, Any] = {"status": AuthorizationStatus(status)}
    if expiry_date is not None:
        info["expiry_date"] = expiry_date
    if parent_id_tag is not None:
        info["parent_id_tag"] = parent_id_tag
    return IdTagInfo(**info)


def check_range(value: int, low: int, high: int, path: str) -> int:
    """``value`` if ``low <= value <= high``, else the CALLERROR for field ``path``.

    The schemas say only "integer"; evgate stores connector ids in 32 bits, meter readings
    (±``METER_MAX``, so that the energy between two fits too) and request ids in 64, so a
    value outside is refused with a clear answer rather than failing in the database.

    Raises:
        PropertyConstraintViolationError: out of range.
    """
    if not low <= value <= high:
        raise PropertyConstraintViolationError(
            f"{path}: {value} is outside {low}..{high}", path=path
        )
    return value
