"""storage room: the writer's op that debits a priced transaction from its user's balance —
a follow-up of the StopTransaction's writes, in its Emission (``then``, beside the CDR), so
that the stop, the charge, the new balance and userBalance.changed commit together.

The user is the owner of the transaction's id tag at the stop (``id_tags.user_id``); an id tag
of no user is charged to no balance. A retried batch or a resent stop books nothing twice
(one entry per transaction, :func:`~evgate.storage.balances.book_transaction_charge`).
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import msgspec

from evgate.storage.balances import BalanceEntry, book_transaction_charge
from evgate.storage.ops.base import Write, WriteOp

__all__ = ["CHARGES", "TransactionCharge", "charge"]


class TransactionCharge(msgspec.Struct, frozen=True, kw_only=True):
    """A closed transaction's price, to debit from its id tag's user."""

    transaction_id: int
    # The id tag that started the transaction (compared case-insensitively).
    id_tag: str
    # The price in the user's currency, at least zero (rounded half up to its minor unit).
    amount: Decimal


class _Charges(WriteOp[TransactionCharge, BalanceEntry | None]):
    name = "balance_charges"

    async def write(
        self, conn: asyncpg.Connection, items: list[TransactionCharge]
    ) -> list[BalanceEntry | None]:
        booked: list[BalanceEntry | None] = []
        for item in items:
            user_id = await conn.fetchval(
                "SELECT user_id FROM id_tags WHERE upper(id_tag) = upper($1)", item.id_tag
            )
            booked.append(
                None
                if user_id is None
                else await book_transaction_charge(conn, user_id, item.amount, item.transaction_id)
            )
        return booked


CHARGES = _Charges()


def charge(item: TransactionCharge) -> Write[BalanceEntry | None]:
    """Debit ``item.amount`` from the balance of the user of ``item.id_tag`` (the entry; None
    for no user, a zero price or a transaction booked before)."""
    return CHARGES(item)
