"""Carts repository: one cart per user (carts) and its lines (cart_items)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

from server.domain.lines import CartLine

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def load_lines(conn: Executor, user_id: int) -> tuple[list[CartLine], str | None]:
    """The cart's purchasable lines (inactive products left out) in the order they were added,
    and the attached promotion code. One query."""
    rows = await conn.fetch(
        """SELECT c.promotion_code, p.id AS product_id, p.sku, p.name, p.category_id,
                  p.price AS unit_price, ci.quantity
             FROM carts c
             LEFT JOIN cart_items ci ON ci.user_id = c.user_id
             LEFT JOIN products p ON p.id = ci.product_id AND p.is_active
            WHERE c.user_id = $1
            ORDER BY ci.added_at, ci.product_id""",
        user_id,
    )
    code = rows[0]["promotion_code"] if rows else None
    lines = [
        CartLine(
            r["product_id"], r["sku"], r["name"], r["category_id"], r["unit_price"], r["quantity"]
        )
        for r in rows
        if r["product_id"] is not None
    ]
    return lines, code


async def products_for_quote(conn: Executor, product_ids: Sequence[int]) -> dict[int, CartLine]:
    """Active products by id, as quantity-1 lines (the caller sets the quantity)."""
    rows = await conn.fetch(
        """SELECT id, sku, name, category_id, price FROM products
            WHERE id = ANY($1::bigint[]) AND is_active""",
        list(product_ids),
    )
    return {
        r["id"]: CartLine(r["id"], r["sku"], r["name"], r["category_id"], r["price"], 1)
        for r in rows
    }


async def lock_cart(conn: asyncpg.Connection, user_id: int) -> None:
    """Create the cart if needed and hold its row lock: one writer per cart at a time."""
    await conn.execute(
        """INSERT INTO carts (user_id) VALUES ($1)
           ON CONFLICT (user_id) DO UPDATE SET updated_at = now()""",
        user_id,
    )


@dataclass(frozen=True, slots=True)
class ItemState:
    """A product as a cart mutation sees it, and how many of it the cart holds (0: none)."""

    is_active: bool
    stock: int
    in_cart: int


async def item_state(conn: Executor, user_id: int, product_id: int) -> ItemState | None:
    row = await conn.fetchrow(
        """SELECT p.is_active, p.stock, coalesce(ci.quantity, 0) AS in_cart
             FROM products p
             LEFT JOIN cart_items ci ON ci.product_id = p.id AND ci.user_id = $1
            WHERE p.id = $2""",
        user_id,
        product_id,
    )
    return ItemState(row["is_active"], row["stock"], row["in_cart"]) if row else None


async def set_quantity(conn: Executor, user_id: int, product_id: int, quantity: int) -> None:
    await conn.execute(
        """INSERT INTO cart_items (user_id, product_id, quantity) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = EXCLUDED.quantity""",
        user_id,
        product_id,
        quantity,
    )


async def remove_item(conn: Executor, user_id: int, product_id: int) -> bool:
    status = await conn.execute(
        "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2", user_id, product_id
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
