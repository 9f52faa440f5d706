"""storage room: the writer's op that debits a priced transaction from its user's balance —
a follow-up of the StopTransaction's writes, in its Emission (``then``, beside the CDR), so
that the stop, the charge, the new balance and userBalance.changed commit together.

The user is the owner of the transaction's id tag at the stop (``id_tags.user_id``); an id tag
of no user is charged to no balance, and neither is a user who is not prepaid (they are billed
otherwise) or one whose currency is not the price's (no exchange rates here: the CDR keeps the
price). A retried batch or a resent stop books nothing twice
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
    # The price (with tax), at least zero, and its currency: charged only to a prepaid user of
    # that currency (rounded half up to its minor unit).
    amount: Decimal
    currency: str


class _Charges(WriteOp[TransactionCharge, BalanceEntry | None]):
    name = "balance_charges"

    async def write(
        self, conn: asyncpg.Connection, items: list[TransactionCharge]
    ) -> list[BalanceEntry | None]:
        booked: list[BalanceEntry | None] = []
        for item in items:
            user_id = await conn.fetchval(
                "SELECT t.user_id FROM id_tags t JOIN users u ON u.id = t.user_id"
                " WHERE upper(t.id_tag) = upper($1) AND u.prepaid AND u.currency = $2",
                item.id_tag,
                item.currency,
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
    for no prepaid user of the price's currency, a zero price or a transaction booked
    before)."""
    return CHARGES(item)
