"""Arrange helpers for the order tests: products, carts, promotions and many users, by SQL.

Plain SQL on purpose: the order tests should fail only when ordering breaks, not when the
catalog or cart endpoints change.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import asyncpg
import orjson

from server.context import AppContext
from server.db import catalog as catalog_repo
from server.db import users
from server.db.catalog import Product
from server.db.users import UserRecord

_n = itertools.count(1)


async def create_product(
    db: asyncpg.Pool | asyncpg.Connection,
    *,
    stock: int,
    price: int = 1000,
    is_active: bool = True,
    category_id: int | None = None,
    name: str | None = None,
    sku: str | None = None,
) -> int:
    """A product with one variant (no options) holding `stock`."""
    n = next(_n)
    sku = sku or f"SKU-{os.getpid()}-{n}-{os.urandom(3).hex()}"
    product_id: int = await db.fetchval(
        """INSERT INTO products (sku, name, price, currency, is_active, category_id)
           VALUES ($1, $2, $3, 'USD', $4, $5) RETURNING id""",
        sku,
        name or f"Product {n}",
        price,
        is_active,
        category_id,
    )
    await db.execute(
        "INSERT INTO product_variants (product_id, sku, stock) VALUES ($1, $2, $3)",
        product_id,
        sku,
        stock,
    )
    return product_id


async def create_sized_product(
    db: asyncpg.Pool | asyncpg.Connection,
    *,
    stocks: dict[str, int],
    price: int = 1000,
    prices: dict[str, int] | None = None,
) -> tuple[int, dict[str, int]]:
    """A product with a `size` option and one variant per size; (product id, variant ids)."""
    n = next(_n)
    sku = f"SIZED-{os.getpid()}-{n}-{os.urandom(3).hex()}"
    product_id: int = await db.fetchval(
        """INSERT INTO products (sku, name, price, currency, options)
           VALUES ($1, $2, $3, 'USD', $4::text::jsonb) RETURNING id""",
        sku,
        f"Sized {n}",
        price,
        orjson.dumps([{"name": "size", "values": list(stocks)}]).decode(),
    )
    variants = {}
    for size, stock in stocks.items():
        variants[size] = await db.fetchval(
            """INSERT INTO product_variants (product_id, sku, options, price, stock)
               VALUES ($1, $2, $3::text::jsonb, $4, $5) RETURNING id""",
            product_id,
            f"{sku}-{size}",
            orjson.dumps({"size": size}).decode(),
            (prices or {}).get(size),
            stock,
        )
    return product_id, variants


async def variant_of(db: asyncpg.Pool | asyncpg.Connection, product_id: int) -> int:
    """The id of a product's only variant."""
    ids = [
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM product_variants WHERE product_id = $1 ORDER BY id", product_id
        )
    ]
    assert len(ids) == 1, f"product {product_id} has {len(ids)} variants"
    return int(ids[0])


async def fill_cart(
    db: asyncpg.Pool | asyncpg.Connection,
    user_id: int,
    items: dict[int, int],
    promotion_code: str | None = None,
) -> None:
    """Replace the user's cart with `items` (product_id → quantity of its only variant)."""
    await db.execute(
        """INSERT INTO carts (user_id, promotion_code) VALUES ($1, $2)
           ON CONFLICT (user_id) DO UPDATE SET promotion_code = EXCLUDED.promotion_code""",
        user_id,
        promotion_code,
    )
    await db.execute("DELETE FROM cart_items WHERE user_id = $1", user_id)
    await db.executemany(
        """INSERT INTO cart_items (user_id, product_id, variant_id, quantity)
           SELECT $1, $2, id, $3 FROM product_variants WHERE product_id = $2""",
        [(user_id, p, q) for p, q in items.items()],
    )


async def cart_size(db: asyncpg.Pool, user_id: int) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM cart_items WHERE user_id = $1", user_id)
    return count


async def create_promotion(
    db: asyncpg.Pool,
    code: str,
    *,
    kind: str = "percent",
    value: int = 10,
    usage_limit: int | None = None,
    min_subtotal: int = 0,
    ends_in: str | None = None,
) -> int:
    promotion_id: int = await db.fetchval(
        """INSERT INTO promotions (code, kind, value, usage_limit, min_subtotal, ends_at)
           VALUES ($1, $2, $3, $4, $5, now() + $6::text::interval) RETURNING id""",
        code,
        kind,
        value,
        usage_limit,
        min_subtotal,
        ends_in,
    )
    return promotion_id


async def stock_of(db: asyncpg.Pool, product_id: int) -> int:
    stock: int = await db.fetchval(
        "SELECT coalesce(sum(stock), 0) FROM product_variants WHERE product_id = $1 AND is_active",
        product_id,
    )
    return stock


async def units_sold(db: asyncpg.Pool, product_id: int) -> int:
    sold: int | None = await db.fetchval(
        "SELECT units_sold FROM product_stats WHERE product_id = $1", product_id
    )
    return sold or 0


async def create_customers(ctx: AppContext, count: int) -> list[tuple[int, str]]:
    """Many customers at once (no password hashing): [(user_id, access token)]."""
    prefix = f"bulk{next(_n)}-{os.urandom(3).hex()}"
    rows = await ctx.pool.fetch(
        """INSERT INTO users (email, name, password_hash, role)
           SELECT $1 || '-' || i || '@example.com', 'Bulk', 'x', 'customer'
             FROM generate_series(1, $2) AS i
           RETURNING id""",
        prefix,
        count,
    )
    return [(r["id"], ctx.tokens.issue_access(r["id"], "customer")) for r in rows]


async def outbox_rows(db: asyncpg.Pool, dedupe_prefix: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT kind, recipient, subject, body, dedupe_key FROM outbox "
        "WHERE dedupe_key LIKE $1 || '%' ORDER BY id",
        dedupe_prefix,
    )
    return [dict(r) for r in rows]


ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


class Accounts:
    """Users without password hashing (Argon2 costs ~64 MiB and real time per user, and the
    order tests never log in): `await accounts.create("admin")` → (UserRecord, access token)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def create(self, role: str = "customer") -> tuple[UserRecord, str]:
        email = f"{role}-{next(_n)}-{os.urandom(4).hex()}@example.com"
        user = await users.create_user(self.ctx.pool, email, role.title(), "no-login", role)
        return user, self.ctx.tokens.issue_access(user.id, user.role)


async def expire_reservations(db: asyncpg.Pool | asyncpg.Connection, order_ids: list[int]) -> None:
    """Make these orders' stock holds run out, as ORDER_PAYMENT_TIMEOUT after checkout would."""
    await db.execute(
        """UPDATE stock_reservations SET expires_at = now() - interval '1 minute'
            WHERE order_id = ANY($1::bigint[])""",
        order_ids,
    )


async def insert_sellable(db: asyncpg.Pool, values: dict[str, Any]) -> Product:
    """A product from column values, `stock` going to its one variant; the admin's view of it."""
    values = dict(values)
    stock = values.pop("stock")
    async with db.acquire() as conn, conn.transaction():
        product_id = await catalog_repo.insert_product(conn, values)
        await conn.execute(
            "INSERT INTO product_variants (product_id, sku, stock) VALUES ($1, $2, $3)",
            product_id,
            values["sku"],
            stock,
        )
        product = await catalog_repo.get_product(conn, product_id, include_inactive=True)
    assert product is not None
    return product
