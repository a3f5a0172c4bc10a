"""Carts repository: one cart per user (carts) and its lines (cart_items), one line per variant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

from server.domain.lines import CartLine

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def load_lines(conn: Executor, user_id: int) -> tuple[list[CartLine], str | None]:
    """The cart's purchasable lines (inactive products or variants left out) in the order they
    were added, and the attached promotion code. One query."""
    rows = await conn.fetch(
        """SELECT c.promotion_code, p.id AS product_id, v.id AS variant_id, v.sku, p.name,
                  v.options, p.category_id, coalesce(v.price, p.price) AS unit_price, ci.quantity
             FROM carts c
             LEFT JOIN cart_items ci ON ci.user_id = c.user_id
             LEFT JOIN product_variants v ON v.id = ci.variant_id AND v.is_active
             LEFT JOIN products p ON p.id = v.product_id AND p.is_active
            WHERE c.user_id = $1
            ORDER BY ci.added_at, ci.variant_id""",
        user_id,
    )
    code = rows[0]["promotion_code"] if rows else None
    lines = [
        CartLine(
            r["product_id"],
            r["sku"],
            r["name"],
            r["category_id"],
            r["unit_price"],
            r["quantity"],
            r["variant_id"],
            r["options"],
        )
        for r in rows
        if r["product_id"] is not None
    ]
    return lines, code


async def lock_cart(conn: asyncpg.Connection, user_id: int) -> None:
    """Create the cart if needed and hold its row lock: one writer per cart at a time."""
    await conn.execute(
        """INSERT INTO carts (user_id) VALUES ($1)
           ON CONFLICT (user_id) DO UPDATE SET updated_at = now()""",
        user_id,
    )


async def lines_of_product(conn: Executor, user_id: int, product_id: int) -> list[tuple[int, int]]:
    """(variant_id, quantity) of the cart's lines of one product."""
    rows = await conn.fetch(
        """SELECT variant_id, quantity FROM cart_items WHERE user_id = $1 AND product_id = $2
            ORDER BY variant_id""",
        user_id,
        product_id,
    )
    return [(r["variant_id"], r["quantity"]) for r in rows]


@dataclass(frozen=True, slots=True)
class ItemState:
    """A variant as a cart mutation sees it, and how many of it the cart holds (0: none)."""

    product_id: int
    sellable: bool
    stock: int
    in_cart: int


async def item_state(conn: Executor, user_id: int, variant_id: int) -> ItemState | None:
    row = await conn.fetchrow(
        """SELECT v.product_id, v.is_active AND p.is_active AS sellable, v.stock,
                  coalesce(ci.quantity, 0) AS in_cart
             FROM product_variants v
             JOIN products p ON p.id = v.product_id
             LEFT JOIN cart_items ci ON ci.variant_id = v.id AND ci.user_id = $1
            WHERE v.id = $2""",
        user_id,
        variant_id,
    )
    if row is None:
        return None
    return ItemState(row["product_id"], row["sellable"], row["stock"], row["in_cart"])


async def set_quantity(
    conn: Executor, user_id: int, product_id: int, variant_id: int, quantity: int
) -> None:
    await conn.execute(
        """INSERT INTO cart_items (user_id, product_id, variant_id, quantity)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id, variant_id) DO UPDATE SET quantity = EXCLUDED.quantity""",
        user_id,
        product_id,
        variant_id,
        quantity,
    )


async def remove_item(conn: Executor, user_id: int, variant_id: int) -> bool:
    status = await conn.execute(
        "DELETE FROM cart_items WHERE user_id = $1 AND variant_id = $2", user_id, variant_id
    )
    return not status.endswith(" 0")


async def set_promotion(conn: Executor, user_id: int, code: str | None) -> None:
    await conn.execute(
        """INSERT INTO carts (user_id, promotion_code) VALUES ($1, $2)
           ON CONFLICT (user_id) DO UPDATE SET promotion_code = EXCLUDED.promotion_code,
                                               updated_at = now()""",
        user_id,
        code,
    )
