"""Orders repository: orders and their items, the stock reservations they hold, and what a
checkout touches inside its own transaction (the cart's lock and emptying, the e-mail
addresses to notify, the outbox rows). Taking and giving back units is db/variants.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from server.domain.lines import OrderItem

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class OrderItemRecord(OrderItem, frozen=True):
    """An order's item as stored: the contract's line and what a refund gave back."""

    # Units a refund put back on sale (never more than `quantity`).
    restocked: int = 0


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
    # When the held stock is released unless paid; None once paid, cancelled, or released.
    reserved_until: datetime | None = None
    items: list[OrderItemRecord] = []


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
    items: Sequence[OrderItem]


_ORDER_FIELDS = (
    "id, user_id, status, subtotal, discount, tax, total, currency, promotion_code, "
    "shipping_address, note, created_at, updated_at"
)
_ORDER_COLUMNS = (
    f"{_ORDER_FIELDS}, (SELECT min(r.expires_at) FROM stock_reservations r "
    "WHERE r.order_id = orders.id AND r.state = 'held') AS reserved_until"
)
# A new order holds no stock yet (hold_stock follows): no reservation to look up.
_NEW_ORDER_COLUMNS = f"{_ORDER_FIELDS}, NULL::timestamptz AS reserved_until"
_ITEM_COLUMNS = (
    "order_id, product_id, variant_id, sku, name, options, quantity, unit_price, line_total, "
    "restocked"
)


def _order(row: asyncpg.Record, items: list[OrderItemRecord]) -> OrderRecord:
    return OrderRecord(**dict(row), items=items)


def _item(row: asyncpg.Record) -> OrderItemRecord:
    values = dict(row)
    values.pop("order_id", None)
    return OrderItemRecord(**values)


# ---- stock ----------------------------------------------------------------------------------


async def hold_stock(
    conn: asyncpg.Connection, order_id: int, quantities: dict[int, int], seconds: float
) -> datetime:
    """Record the units (by variant) the order holds until paid, for `seconds`; returns when
    the hold expires."""
    variant_ids = sorted(quantities)
    expires_at: datetime = await conn.fetchval(
        """INSERT INTO stock_reservations (order_id, variant_id, quantity, expires_at)
           SELECT $1, v, q, now() + make_interval(secs => $4)
             FROM unnest($2::bigint[], $3::int[]) AS t(v, q)
        RETURNING expires_at""",
        order_id,
        variant_ids,
        [quantities[v] for v in variant_ids],
        float(seconds),
    )
    return expires_at


async def commit_reservations(conn: asyncpg.Connection, order_id: int) -> None:
    """The order is paid: its held units are sold for good."""
    await conn.execute(
        """UPDATE stock_reservations SET state = 'committed', settled_at = now()
            WHERE order_id = $1 AND state = 'held'""",
        order_id,
    )


async def release_reservations(conn: asyncpg.Connection, order_id: int) -> dict[int, int]:
    """The order is cancelled: its held or sold units are released; returns them by variant
    (what goes back on sale), less what refunds already restocked."""
    rows = await conn.fetch(
        """UPDATE stock_reservations r SET state = 'released', settled_at = now()
             FROM order_items oi
            WHERE r.order_id = $1 AND r.state <> 'released'
              AND oi.order_id = r.order_id AND oi.variant_id = r.variant_id
        RETURNING r.variant_id, r.quantity - oi.restocked AS units""",
        order_id,
    )
    return {r["variant_id"]: r["units"] for r in rows if r["units"] > 0}


async def mark_restocked(conn: asyncpg.Connection, order_id: int, units: dict[int, int]) -> bool:
    """Count units a refund puts back on sale; False (nothing counted) when some line would
    get back more than it sold."""
    for variant_id in sorted(units):
        done = await conn.fetchval(
            """UPDATE order_items SET restocked = restocked + $3
                WHERE order_id = $1 AND variant_id = $2 AND restocked + $3 <= quantity
            RETURNING 1""",
            order_id,
            variant_id,
            units[variant_id],
        )
        if done is None:
            return False
    return True


async def add_units_sold(conn: asyncpg.Connection, quantities: dict[int, int]) -> None:
    """Count units into product_stats; negative quantities take back a cancelled order's.
    One statement for every product, rows taken in ascending product id."""
    if not quantities:
        return
    product_ids = sorted(quantities)
    await conn.execute(
        """INSERT INTO product_stats (product_id, units_sold)
           SELECT t.p, GREATEST(t.q, 0) FROM unnest($1::bigint[], $2::bigint[]) AS t(p, q)
            ORDER BY t.p
           ON CONFLICT (product_id) DO UPDATE
              SET units_sold = GREATEST(
                      product_stats.units_sold
                      + (SELECT d.q FROM unnest($1::bigint[], $2::bigint[]) AS d(p, q)
                          WHERE d.p = EXCLUDED.product_id),
                      0),
                  updated_at = now()""",
        product_ids,
        [quantities[p] for p in product_ids],
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
            RETURNING {_NEW_ORDER_COLUMNS}""",
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
    items = sorted(order.items, key=lambda i: i.variant_id)
    await conn.execute(
        f"""INSERT INTO order_items ({_ITEM_COLUMNS})
            SELECT $1, *, 0 FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[],
                                        $6::jsonb[], $7::int[], $8::bigint[], $9::bigint[])""",
        row["id"],
        [i.product_id for i in items],
        [i.variant_id for i in items],
        [i.sku for i in items],
        [i.name for i in items],
        [i.options for i in items],
        [i.quantity for i in items],
        [i.unit_price for i in items],
        [i.line_total for i in items],
    )
    # Nothing of a new order was refunded yet: each record is its item with restocked = 0.
    return _order(row, [OrderItemRecord(*msgspec.structs.astuple(i)) for i in items])


async def _items_of(conn: Executor, order_ids: Sequence[int]) -> dict[int, list[OrderItemRecord]]:
    rows = await conn.fetch(
        f"""SELECT {_ITEM_COLUMNS} FROM order_items WHERE order_id = ANY($1::bigint[])
             ORDER BY order_id, variant_id""",
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


async def lock_expired_pending(conn: asyncpg.Connection, limit: int) -> list[OrderRecord]:
    """Pending orders whose reservation expired, locked; rows another worker holds are skipped.
    An order with an authorised payment is left alone: capturing or voiding it settles it."""
    rows = await conn.fetch(
        f"""SELECT {_ORDER_COLUMNS} FROM orders
             WHERE status = 'pending'
               AND id IN (SELECT order_id FROM stock_reservations
                           WHERE state = 'held' AND expires_at < now())
               AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.order_id = orders.id
                                  AND p.status = 'authorized')
             ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED""",
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
    """Remove the lines and the promotion code the order used (one statement)."""
    await conn.execute(
        """WITH emptied AS (DELETE FROM cart_items WHERE user_id = $1)
           UPDATE carts SET promotion_code = NULL, updated_at = now() WHERE user_id = $1""",
        user_id,
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
