"""storage room: users' prepaid balances, changed only by booked entries.

Each entry is booked in one transaction with the balance it changes and its userBalance.changed
event. Entries of one user are serialised by that user's row lock (the balance is read
``FOR UPDATE`` before it is checked and changed), so parallel requests can never take a
balance below zero: an API entry that would is refused (:class:`InsufficientBalance`), as a
whole. A priced transaction is the exception: its energy was delivered, so its charge is
booked whatever the balance (the user is then refused at the next Authorize), once per
transaction (a resent StopTransaction books nothing).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import asyncpg
import msgspec

from evgate.storage.db import Database
from evgate.storage.errors import InsufficientBalance, NotFound
from evgate.storage.keyset import children_page
from evgate.storage.money import AmountError, format_amount, minor_unit, parse_amount
from evgate.storage.outbox import record_user_balance_changed
from evgate.storage.users import Money

__all__ = [
    "BalanceEntry",
    "BalanceStore",
    "BookingType",
    "EntryType",
    "book_transaction_charge",
]

#: What the API may book: a top-up and a voucher credit, an adjustment either way.
BookingType = Literal["topUp", "voucher", "adjustment"]
#: Every entry's type: the API's, and a priced transaction's debit.
EntryType = Literal["topUp", "voucher", "adjustment", "transaction"]


class BalanceEntry(msgspec.Struct, rename="camel", kw_only=True):
    """A booked entry: ``amount`` signed (credit > 0, debit < 0), ``balance`` after it, both
    with the currency's decimals."""

    id: int
    user_id: int
    type: EntryType
    amount: str
    balance: str
    currency: str
    transaction_id: int | None
    created_at: datetime


_ENTRY = "id, user_id, type, amount, balance, currency, transaction_id, created_at"


def _entry(row: asyncpg.Record) -> BalanceEntry:
    currency = row["currency"]
    return BalanceEntry(
        id=row["id"],
        user_id=row["user_id"],
        type=row["type"],
        amount=format_amount(row["amount"], currency),
        balance=format_amount(row["balance"], currency),
        currency=currency,
        transaction_id=row["transaction_id"],
        created_at=row["created_at"],
    )


class BalanceStore:
    """Balances and their entries (``/api/v1/users/{id}/balance``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def book(self, user_id: int, amount: str, booking: BookingType) -> BalanceEntry:
        """Book ``amount`` (a decimal string in the user's currency) on the user's balance.

        Raises:
            NotFound: no such user.
            AmountError: not an amount of the user's currency, or of the wrong sign (a top-up
                or a voucher is positive, an adjustment not zero).
            InsufficientBalance: the balance would go below zero (nothing is booked).
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            # The user's row lock serialises their entries (every process, every request).
            user = await conn.fetchrow(
                "SELECT currency, balance FROM users WHERE id = $1 FOR UPDATE", user_id
            )
            if user is None:
                raise NotFound(f"no user {user_id}")
            currency = user["currency"]
            value = parse_amount(amount, currency)
            _check_sign(value, booking)
            if user["balance"] + value < 0:
                raise InsufficientBalance(
                    f"user {user_id}'s balance is {format_amount(user['balance'], currency)}"
                    f" {currency}; {amount} would take it below zero"
                )
            row = await _book(conn, user_id, value, booking, None)
        assert row is not None
        return row

    async def balance(self, user_id: int) -> Money:
        """Raises: NotFound."""
        row = await self.db.fetchrow("SELECT balance, currency FROM users WHERE id = $1", user_id)
        if row is None:
            raise NotFound(f"no user {user_id}")
        return Money(format_amount(row["balance"], row["currency"]), row["currency"])

    async def entries(
        self, user_id: int, after: int | None = None, limit: int = 100
    ) -> list[BalanceEntry]:
        """The user's entries, oldest first after entry ``after`` (keyset pagination).

        Raises:
            NotFound: no such user.
        """
        rows = await children_page(
            self.db,
            parent=("users", "user"),
            parent_id=user_id,
            columns=_ENTRY,
            table="balance_entries",
            foreign_key="user_id",
            after=after,
            limit=limit,
        )
        return [_entry(r) for r in rows]


def _check_sign(value: Decimal, booking: BookingType) -> None:
    if value == 0:
        raise AmountError("an entry's amount is not zero")
    if value < 0 and booking != "adjustment":
        raise AmountError(f"a {booking} is positive (a debit is an adjustment)")


async def _book(
    conn: asyncpg.Connection,
    user_id: int,
    value: Decimal,
    entry_type: EntryType,
    transaction_id: int | None,
) -> BalanceEntry | None:
    """Change the balance by ``value`` and record the entry and its event, on ``conn`` in the
    caller's transaction; None when the user is gone or ``transaction_id`` was booked."""
    row = await conn.fetchrow(
        "INSERT INTO balance_entries (user_id, type, amount, currency, transaction_id)"
        " SELECT id, $2, $3, currency, $4 FROM users WHERE id = $1"
        " ON CONFLICT (transaction_id) WHERE transaction_id IS NOT NULL DO NOTHING RETURNING id",
        user_id,
        entry_type,
        value,
        transaction_id,
    )
    if row is None:
        return None
    # The UPDATE takes the user's row lock (if the caller has not): entries serialise here.
    row = await conn.fetchrow(
        "WITH u AS (UPDATE users SET balance = balance + $3, updated_at = now()"
        " WHERE id = $2 RETURNING balance)"
        " UPDATE balance_entries SET balance = (SELECT balance FROM u) WHERE id = $1"
        f" RETURNING {_ENTRY}",
        row["id"],
        user_id,
        value,
    )
    entry = _entry(row)
    await record_user_balance_changed(conn, entry)
    return entry


async def book_transaction_charge(
    conn: asyncpg.Connection, user_id: int, amount: Decimal, transaction_id: int
) -> BalanceEntry | None:
    """Debit a priced transaction from its user's balance, in the caller's transaction.

    Call it on the connection and inside the transaction that stores the stop (the writer's
    batch), with the price in the user's currency: the entry, the new balance and
    userBalance.changed commit or roll back with the stop. The balance may go below zero (the
    energy was delivered); the user's prepaid refusal follows from the authorizer's NOTIFY.

    Args:
        conn: a connection inside an open transaction.
        user_id: the user who owns the transaction's id tag.
        amount: the price in the user's currency, positive; rounded half up to the
            currency's minor unit (a price of zero books nothing).
        transaction_id: the OCPP transaction; booked at most once.

    Returns:
        The booked entry; None for a zero price, a transaction booked before, or a user that
        no longer exists.

    Raises:
        ValueError: a negative amount.
    """
    if amount < 0:
        raise ValueError(f"a transaction's charge is not negative, got {amount}")
    currency = await conn.fetchval("SELECT currency FROM users WHERE id = $1", user_id)
    if currency is None:
        return None
    charge = amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), ROUND_HALF_UP)
    if charge == 0:
        return None
    return await _book(conn, user_id, -charge, "transaction", transaction_id)
