"""storage room: how users pay — payment methods and invoice details.

A payment method is what the payment provider holds, by reference: type, issuer, last four
digits, expiry, and the provider's opaque token; never a card number (the API refuses any value
that looks like one before it reaches here). A user has at most one default method (a unique
partial index): making one the default takes it from the other in the same transaction, and
each change appends user.paymentMethod.changed (also for the method that stopped being the
default). Invoice details are one row per user (user.invoiceDetails.changed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import msgspec

from evgate.events.builders import invoice_details_changed, payment_method_changed
from evgate.storage.db import Database
from evgate.storage.errors import NotFound
from evgate.storage.keyset import children_page
from evgate.storage.outbox import insert_outbox

__all__ = [
    "INVOICE_FIELDS",
    "PAYMENT_METHOD_FIELDS",
    "InvoiceDetails",
    "InvoiceDetailsStore",
    "InvoiceKind",
    "PaymentMethod",
    "PaymentMethodStore",
    "PaymentMethodType",
]

PaymentMethodType = Literal["card", "sepaDirectDebit", "paypal", "other"]
InvoiceKind = Literal["individual", "company"]


class PaymentMethod(msgspec.Struct, rename="camel", kw_only=True):
    """A user's payment method (``providerToken``: the provider's reference, opaque)."""

    id: int
    user_id: int
    type: PaymentMethodType
    issuer: str | None
    last_four: str | None
    expiry_month: int | None
    expiry_year: int | None
    default: bool
    provider_token: str | None
    created_at: datetime
    updated_at: datetime


#: The columns a payment method's changeable fields are stored in (``default``: is_default).
PAYMENT_METHOD_FIELDS = ("type", "issuer", "last_four", "expiry_month", "expiry_year",
                         "provider_token")  # fmt: skip
_METHOD = (
    'id, user_id, type, issuer, last_four, expiry_month, expiry_year, is_default AS "default",'
    " provider_token, created_at, updated_at"
)


def _method(row: asyncpg.Record) -> PaymentMethod:
    return PaymentMethod(**{k: row[k] for k in PaymentMethod.__struct_fields__})


async def _user_locked(conn: asyncpg.Connection, user_id: int) -> None:
    """Lock the user's row (their methods' default changes one at a time), or NotFound."""
    if await conn.fetchval("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id) is None:
        raise NotFound(f"no user {user_id}")


async def _take_default(conn: asyncpg.Connection, user_id: int, keep: int | None) -> list[int]:
    """Unset the default of the user's other methods; the ids that lost it."""
    rows = await conn.fetch(
        "UPDATE payment_methods SET is_default = false, updated_at = now()"
        " WHERE user_id = $1 AND is_default AND id IS DISTINCT FROM $2 RETURNING id",
        user_id,
        keep,
    )
    return [r["id"] for r in rows]


class PaymentMethodStore:
    """``/api/v1/users/{id}/payment-methods``; each change with its events."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, user_id: int, fields: dict[str, Any], default: bool) -> PaymentMethod:
        """Add a method; a user's first method is their default whatever ``default`` says.

        Raises:
            NotFound: no such user.
        """
        names = sorted(fields)
        async with self.db.pool.acquire() as conn, conn.transaction():
            await _user_locked(conn, user_id)
            first = not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM payment_methods WHERE user_id = $1)", user_id
            )
            default = default or first
            undefaulted = await _take_default(conn, user_id, None) if default else []
            columns = ", ".join(["user_id", "is_default", *names])
            values = ", ".join(f"${i}" for i in range(1, len(names) + 3))
            row = await conn.fetchrow(
                f"INSERT INTO payment_methods ({columns}) VALUES ({values}) RETURNING {_METHOD}",
                user_id,
                default,
                *(fields[n] for n in names),
            )
            method = _method(row)
            await _record(conn, user_id, undefaulted, method.id, "created")
        return method

    async def get(self, user_id: int, method_id: int) -> PaymentMethod:
        """Raises: NotFound."""
        row = await self.db.fetchrow(
            f"SELECT {_METHOD} FROM payment_methods WHERE id = $1 AND user_id = $2",
            method_id,
            user_id,
        )
        if row is None:
            raise NotFound(f"no payment method {method_id} of user {user_id}")
        return _method(row)

    async def of_user(
        self, user_id: int, after: int | None = None, limit: int = 100
    ) -> list[PaymentMethod]:
        """The user's methods in id order (keyset pagination).

        Raises:
            NotFound: no such user.
        """
        rows = await children_page(
            self.db,
            parent=("users", "user"),
            parent_id=user_id,
            columns=_METHOD,
            table="payment_methods",
            foreign_key="user_id",
            after=after,
            limit=limit,
        )
        return [_method(r) for r in rows]

    async def update(
        self, user_id: int, method_id: int, fields: dict[str, Any], default: bool | None
    ) -> PaymentMethod:
        """Change some of :data:`PAYMENT_METHOD_FIELDS`; ``default`` True makes it the user's
        default (False leaves the user without one).

        Raises:
            NotFound: no such user or method.
        """
        unknown = set(fields) - set(PAYMENT_METHOD_FIELDS)
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        async with self.db.pool.acquire() as conn, conn.transaction():
            await _user_locked(conn, user_id)
            undefaulted = await _take_default(conn, user_id, method_id) if default else []
            if default is not None:
                fields = {**fields, "is_default": default}
            names = sorted(fields)
            sets = "".join(f"{n} = ${i}, " for i, n in enumerate(names, start=3))
            row = await conn.fetchrow(
                f"UPDATE payment_methods SET {sets}updated_at = now()"
                f" WHERE id = $1 AND user_id = $2 RETURNING {_METHOD}",
                method_id,
                user_id,
                *(fields[n] for n in names),
            )
            if row is None:
                raise NotFound(f"no payment method {method_id} of user {user_id}")
            method = _method(row)
            await _record(conn, user_id, undefaulted, method.id, "updated")
        return method

    async def delete(self, user_id: int, method_id: int) -> None:
        """Remove a method (the user has no default after removing the default one).

        Raises:
            NotFound: no such user or method.
        """
        async with self.db.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "DELETE FROM payment_methods WHERE id = $1 AND user_id = $2 RETURNING id",
                method_id,
                user_id,
            )
            if done is None:
                raise NotFound(f"no payment method {method_id} of user {user_id}")
            await _record(conn, user_id, [], method_id, "deleted")


async def _record(
    conn: asyncpg.Connection,
    user_id: int,
    undefaulted: list[int],
    method_id: int,
    action: Literal["created", "updated", "deleted"],
) -> None:
    at = datetime.now(UTC)
    await insert_outbox(
        conn,
        [
            *(payment_method_changed(m, user_id, "updated", at) for m in undefaulted),
            payment_method_changed(method_id, user_id, action, at),
        ],
    )


class InvoiceDetails(msgspec.Struct, rename="camel", kw_only=True):
    """Who a user's invoices are made out to: a person or a company."""

    kind: InvoiceKind
    name: str
    tax_id: str | None
    street: str | None
    post_code: str | None
    city: str | None
    country: str | None
    created_at: datetime
    updated_at: datetime


#: Invoice details' fields, all set by each PUT.
INVOICE_FIELDS = ("kind", "name", "tax_id", "street", "post_code", "city", "country")
_INVOICE = ", ".join((*INVOICE_FIELDS, "created_at", "updated_at"))


class InvoiceDetailsStore:
    """``/api/v1/users/{id}/invoice-details``: one per user, replaced whole."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: int) -> InvoiceDetails | None:
        """The user's invoice details, None while none are set.

        Raises:
            NotFound: no such user.
        """
        row = await self.db.fetchrow(
            f"SELECT u.id AS found, d.* FROM users u"
            f" LEFT JOIN (SELECT user_id, {_INVOICE} FROM invoice_details) d ON d.user_id = u.id"
            " WHERE u.id = $1",
            user_id,
        )
        if row is None:
            raise NotFound(f"no user {user_id}")
        if row["user_id"] is None:
            return None
        return InvoiceDetails(**{k: row[k] for k in InvoiceDetails.__struct_fields__})

    async def put(self, user_id: int, fields: dict[str, Any]) -> tuple[InvoiceDetails, bool]:
        """Set the user's invoice details (every one of :data:`INVOICE_FIELDS`); the details
        and whether they were created (else replaced).

        Raises:
            NotFound: no such user.
        """
        values = [fields.get(n) for n in INVOICE_FIELDS]
        params = ", ".join(f"${i}" for i in range(2, len(INVOICE_FIELDS) + 2))
        sets = ", ".join(f"{n} = EXCLUDED.{n}" for n in INVOICE_FIELDS)
        async with self.db.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id) is None:
                raise NotFound(f"no user {user_id}")
            row = await conn.fetchrow(
                f"INSERT INTO invoice_details (user_id, {', '.join(INVOICE_FIELDS)})"
                f" VALUES ($1, {params}) ON CONFLICT (user_id) DO UPDATE SET {sets},"
                f" updated_at = now() RETURNING {_INVOICE}, (xmax = 0) AS inserted",
                user_id,
                *values,
            )
            created = bool(row["inserted"])
            action: Literal["created", "updated"] = "created" if created else "updated"
            await insert_outbox(conn, [invoice_details_changed(user_id, action, datetime.now(UTC))])
        details = InvoiceDetails(**{k: row[k] for k in InvoiceDetails.__struct_fields__})
        return details, created
