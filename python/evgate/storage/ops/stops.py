"""storage room: what a closed transaction writes after its stop, in the stop's database
transaction — its price (when it has a tariff snapshot) and its charge to a prepaid user's
balance (``ops/balances.py``, with its userBalance.changed), its CDR and its events.

One function for both ways a transaction closes: a charger's StopTransaction
(``handlers/transactions.py``) and the operator's stop (``api/charging.py``), so that a
transaction closed either way is priced, recorded and told about alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from evgate.events.builders import ChargerRef, transaction_stopped
from evgate.pricing import PricingInput, Reading, price
from evgate.storage.ops import balances, cdrs, outbox, transactions
from evgate.storage.ops.base import Write
from evgate.storage.ops.transactions import TransactionFacts, TransactionPrice

__all__ = ["after_stop", "priced"]


def priced(tx: TransactionFacts, more: Sequence[Reading] = ()) -> TransactionFacts:
    """``tx`` (stopped, with a tariff snapshot) with its price; ``more``: readings besides
    those the stop op returned (a StopTransaction's transactionData, which the stop op may
    have read too: a reading's time is its key, as in ``meter_values``, and the first one of
    a time counts, as the stored one does)."""
    assert tx.tariff is not None and tx.stopped_at is not None and tx.meter_stop is not None
    readings: dict[datetime, Reading] = {}
    for reading in (*tx.readings, *more):
        readings.setdefault(reading.at, reading)
    facts = PricingInput(
        started_at=tx.started_at,
        stopped_at=tx.stopped_at,
        meter_start=tx.meter_start,
        meter_stop=tx.meter_stop,
        readings=tuple(readings.values()),
        idle_periods=tx.idle_periods,
    )
    return msgspec.structs.replace(tx, price=price(tx.tariff, facts))


def after_stop(
    charger: ChargerRef, closed: TransactionFacts, at: datetime, more: Sequence[Reading] = ()
) -> list[Write[Any]]:
    """The writes that follow the stop op's ``closed`` transaction in its database
    transaction: its price (if it has a tariff) and the charge of its price (with tax) to
    the balance of its id tag's user, its CDR and the stop's events, made ``at``."""
    follow: list[Write[Any]] = []
    if closed.tariff is not None and closed.stopped_at is not None:
        closed = priced(closed, more)
        assert closed.price is not None
        follow.append(
            transactions.priced(
                TransactionPrice(transaction_id=closed.transaction_id, price=closed.price)
            )
        )
        if closed.id_tag is not None:
            follow.append(
                balances.charge(
                    balances.TransactionCharge(
                        transaction_id=closed.transaction_id,
                        id_tag=closed.id_tag,
                        amount=closed.price.total_incl_tax,
                        currency=closed.price.currency,
                    )
                )
            )
    cdr, entries = transaction_stopped(charger, closed, at)
    return [*follow, cdrs.insert(cdr), *outbox.append(entries)]
