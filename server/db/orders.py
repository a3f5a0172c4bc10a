"""Orders repository: orders and their items, the stock they take and give back, and what a
checkout touches inside its own transaction (the cart's lock and emptying, the e-mail
addresses to notify, the outbox rows).

Every function that locks product rows does it one product at a time in ascending id order.
All writers (checkout, cancel, expiry) follow that one order, so they can wait on each other
but never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class OrderItemRecord(msgspec.Struct, frozen=True):
    product_id: int
    sku: str
    name: str
    quantity: int
    unit_price: int
    line_total: int


class OrderRecord(msgspec.Struct, frozen=True):
    id: int
    user_id: int
    status: str
    subtotal: int
    discount: int
    tax: int
    total: int
    currency: str
    promotion_code: str | None
    shipping_address: dict[str, Any] | None
    note: str | None
    created_at: datetime
    updated_at: datetime
    items: list[OrderItemRecord] = []


@dataclass(frozen=True, slots=True)
class TakenStock:
    """A product row after its stock was taken: the figures the order snapshots."""

    product_id: int
    sku: str
    name: str
    category_id: int | None
    price: int
    stock_after: int


@dataclass(frozen=True, slots=True)
class Availability:
    product_id: int
    stock: int
    is_active: bool


@dataclass(frozen=True, slots=True)
class NewOrder:
    user_id: int
    subtotal: int
    discount: int
    tax: int
    total: int
    currency: str
    promotion_code: str | None
    shipping_address: dict[str, Any] | None
    note: str | None
    items: Sequence[OrderItemRecord]


_ORDER_COLUMNS = (
    "id, user_id, status, subtotal, discount, tax, total, currency, promotion_code, "
    "shipping_address, note, created_at, updated_at"
)
_ITEM_COLUMNS = "order_id, product_id, sku, name, quantity, unit_price, line_total"


def _order(row: asyncpg.Record, items: list[OrderItemRecord]) -> OrderRecord:
    return OrderRecord(**dict(row), items=items)


def _item(row: asyncpg.Record) -> OrderItemRecord:
    values = dict(row)
    values.pop("order_id", None)
    return OrderItemRecord(**values)


# ---- stock ----------------------------------------------------------------------------------


async def take_stock(conn: asyncpg.Connection, product_id: int, quantity: int) -> TakenStock | None:
    """Take `quantity` units of an active product; None (nothing taken) when short or inactive.

    The condition is re-checked on the latest row version after any lock wait, so two
    checkouts racing for the last unit cannot both succeed.
    """
    row = await conn.fetchrow(
        """UPDATE products SET stock = stock - $2, updated_at = now()
            WHERE id = $1 AND is_active AND stock >= $2
        RETURNING id, sku, name, category_id, price, stock""",
        product_id,
        quantity,
    )
    if row is None:
        return None
    return TakenStock(
        row["id"], row["sku"], row["name"], row["category_id"], row["price"], row["stock"]
    )


async def availability(conn: Executor, product_ids: Sequence[int]) -> dict[int, Availability]:
    """Current stock of products (unknown ids are absent); reads only, takes no lock."""
    rows = await conn.fetch(
        "SELECT id, stock, is_active FROM products WHERE id = ANY($1::bigint[])", list(product_ids)
    )
    return {r["id"]: Availability(r["id"], r["stock"], r["is_active"]) for r in rows}


async def restock(conn: asyncpg.Connection, quantities: dict[int, int]) -> None:
    """Give units back (ascending product id, like every other stock writer)."""
    for product_id in sorted(quantities):
        await conn.execute(
            "UPDATE products SET stock = stock + $2, updated_at = now() WHERE id = $1",
            product_id,
            quantities[product_id],
        )


async def add_units_sold(conn: asyncpg.Connection, quantities: dict[int, int]) -> None:
    """Count units into product_stats; negative quantities take back a cancelled order's."""
    for product_id in sorted(quantities):
        await conn.execute(
            """INSERT INTO product_stats (product_id, units_sold) VALUES ($1, GREATEST($2, 0))
               ON CONFLICT (product_id) DO UPDATE
                  SET units_sold = GREATEST(product_stats.units_sold + $2, 0),
                      updated_at = now()""",
            product_id,
            quantities[product_id],
        )


# ---- promotions -----------------------------------------------------------------------------


async def count_promotion_use(conn: asyncpg.Connection, promotion_id: int) -> bool:
    """Count one use; False when the usage limit was reached meanwhile (nothing counted)."""
    row = await conn.fetchrow(
        """UPDATE promotions SET times_used = times_used + 1
            WHERE id = $1 AND (usage_limit IS NULL OR times_used < usage_limit)
        RETURNING id""",
        promotion_id,
    )
    return row is not None


# ---- orders ---------------------------------------------------------------------------------


async def insert_order(conn: asyncpg.Connection, order: NewOrder) -> OrderRecord:
    row = await conn.fetchrow(
        f"""INSERT INTO orders (user_id, subtotal, discount, tax, total, currency, promotion_code,
                                shipping_address, note)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {_ORDER_COLUMNS}""",
        order.user_id,
        order.subtotal,
        order.discount,
        order.tax,
        order.total,
        order.currency,
        order.promotion_code,
        order.shipping_address,
        order.note,
    )
    assert row is not None
    items = sorted(order.items, key=lambda i: i.product_id)
    await conn.execute(
        f"""INSERT INTO order_items ({_ITEM_COLUMNS})
            SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::int[],
                                     $6::bigint[], $7::bigint[])""",
        row["id"],
        [i.product_id for i in items],
        [i.sku for i in items],
        [i.name for i in items],
        [i.quantity for i in items],
        [i.unit_price for i in items],
        [i.line_total for i in items],
    )
    return _order(row, list(items))


async def _items_of(conn: Executor, order_ids: Sequence[int]) -> dict[int, list[OrderItemRecord]]:
    rows = await conn.fetch(
        f"""SELECT {_ITEM_COLUMNS} FROM order_items WHERE order_id = ANY($1::bigint[])
             ORDER BY order_id, product_id""",
        list(order_ids),
    )
    items: dict[int, list[OrderItemRecord]] = {order_id: [] for order_id in order_ids}
    for row in rows:
        items[row["order_id"]].append(_item(row))
    return items


async def get_order(
    conn: Executor, order_id: int, *, for_update: bool = False
) -> OrderRecord | None:
    """One order with its items; `for_update` locks the order row until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = $1{lock}", order_id)
    if row is None:
        return None
    return _order(row, (await _items_of(conn, [order_id]))[order_id])


async def list_orders(
    conn: Executor, *, user_id: int | None, status: str | None, before_id: int | None, limit: int
) -> list[OrderRecord]:
    """Newest first (ids follow creation), keyset-paginated on the id."""
    conditions: list[str] = []
    args: list[Any] = []
    for column, op, value in (
        ("user_id", "=", user_id),
        ("status", "=", status),
        ("id", "<", before_id),
    ):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} {op} ${len(args)}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_ORDER_COLUMNS} FROM orders {where} ORDER BY id DESC LIMIT ${len(args)}", *args
    )
    items = await _items_of(conn, [r["id"] for r in rows])
    return [_order(r, items[r["id"]]) for r in rows]


async def set_status(conn: asyncpg.Connection, order: OrderRecord, status: str) -> OrderRecord:
    row = await conn.fetchrow(
        f"""UPDATE orders SET status = $2, updated_at = now() WHERE id = $1
            RETURNING {_ORDER_COLUMNS}""",
        order.id,
        status,
    )
    assert row is not None
    return _order(row, order.items)


async def lock_expired_pending(
    conn: asyncpg.Connection, older_than_seconds: float, limit: int
) -> list[OrderRecord]:
    """Pending orders created before the cut-off, locked; rows another worker holds are skipped."""
    rows = await conn.fetch(
        f"""SELECT {_ORDER_COLUMNS} FROM orders
             WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)
             ORDER BY id LIMIT $2
             FOR UPDATE SKIP LOCKED""",
        float(older_than_seconds),
        limit,
    )
    items = await _items_of(conn, [r["id"] for r in rows])
    return [_order(r, items[r["id"]]) for r in rows]


async def mark_cancelled(conn: asyncpg.Connection, order_ids: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE orders SET status = 'cancelled', updated_at = now() WHERE id = ANY($1::bigint[])",
        list(order_ids),
    )


# ---- the cart being checked out -------------------------------------------------------------


async def lock_cart(conn: asyncpg.Connection, user_id: int) -> None:
    """Hold the user's cart row (if any) until the transaction ends.

    Cart writers lock the same row, and two checkouts of one cart serialise here: the second
    reads the cart after the first emptied it, and finds nothing to order.
    """
    await conn.execute("SELECT 1 FROM carts WHERE user_id = $1 FOR UPDATE", user_id)


async def empty_cart(conn: asyncpg.Connection, user_id: int) -> None:
    """Remove the lines and the promotion code the order used."""
    await conn.execute("DELETE FROM cart_items WHERE user_id = $1", user_id)
    await conn.execute(
        "UPDATE carts SET promotion_code = NULL, updated_at = now() WHERE user_id = $1", user_id
    )


# ---- who gets told --------------------------------------------------------------------------


async def email_of(conn: Executor, user_id: int) -> str | None:
    email: str | None = await conn.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    return email


async def admin_emails(conn: Executor) -> list[str]:
    rows = await conn.fetch("SELECT email FROM users WHERE role = 'admin' ORDER BY id")
    return [r["email"] for r in rows]


@dataclass(frozen=True, slots=True)
class Mail:
    kind: str
    recipient: str
    subject: str
    body: str
    dedupe_key: str


async def enqueue_mail(conn: asyncpg.Connection, mails: Iterable[Mail]) -> None:
    """Write outbox rows in the caller's transaction; a dedupe key already there is skipped."""
    for mail in mails:
        await conn.execute(
            """INSERT INTO outbox (kind, recipient, subject, body, dedupe_key)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING""",
            mail.kind,
            mail.recipient,
            mail.subject,
            mail.body,
            mail.dedupe_key,
        )
