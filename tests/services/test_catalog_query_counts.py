"""No N+1: list and cart endpoints run the same number of SQL statements for 1 item as for 50.

The gateway here runs on a pool whose every connection logs its statements (asyncpg query
loggers), so the count is what PostgreSQL really received, per request.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from asyncpg import introspection

from server.context import AppContext
from server.db.pool import _init_connection
from tests.conftest import ApiClient, UserFactory, make_settings, start_gateway

# asyncpg looks up unfamiliar types once per connection; that is not the request's own SQL.
_INTROSPECTION = (introspection.INTRO_LOOKUP_TYPES, introspection.INTRO_LOOKUP_TYPES_13)


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, record: Any) -> None:
        if record.query in _INTROSPECTION or "set_config('jit'" in record.query:
            return
        self.count += 1


@pytest_asyncio.fixture(scope="module")
async def counted(database_url: str) -> AsyncIterator[tuple[AppContext, QueryCounter, ApiClient]]:
    counter = QueryCounter()

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        conn.add_query_logger(counter)

    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, init=init, server_settings={"timezone": "UTC"}
    )
    ctx = AppContext(settings=make_settings(database_url), pool=pool)
    gateway, addresses = await start_gateway(ctx, "tornado")
    client = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
    yield ctx, counter, client
    client.close()
    await gateway.stop_servers(grace=1.0)
    await pool.close()


async def statements(counter: QueryCounter, call: Any) -> int:
    before = counter.count
    response = await call
    assert response.status == 200, response
    return counter.count - before


async def seed_products(ctx: AppContext, category_id: int, n: int) -> list[int]:
    rows = await ctx.pool.fetch(
        """WITH made AS (
               INSERT INTO products (sku, name, price, currency, category_id)
               SELECT 'NPLUS-' || $1 || '-' || g, 'Item ' || g, 100 + g, 'USD', $2
                 FROM generate_series(1, $3) AS g RETURNING id, sku)
           INSERT INTO product_variants (product_id, sku, stock)
           SELECT id, sku, 999 FROM made RETURNING product_id""",
        uuid.uuid4().hex[:8],
        category_id,
        n,
    )
    return sorted(r["product_id"] for r in rows)


async def category(ctx: AppContext) -> int:
    slug = f"nplus-{uuid.uuid4().hex[:8]}"
    category_id: int = await ctx.pool.fetchval(
        "INSERT INTO categories (name, slug) VALUES ($1, $1) RETURNING id", slug
    )
    return category_id


@pytest.fixture(scope="module")
def make_counted_user(counted: tuple[AppContext, QueryCounter, ApiClient]) -> UserFactory:
    return UserFactory(counted[0])


async def test_product_list_statements_do_not_grow_with_items(
    counted: tuple[AppContext, QueryCounter, ApiClient],
) -> None:
    ctx, counter, client = counted
    one, fifty = await category(ctx), await category(ctx)
    await seed_products(ctx, one, 1)
    await seed_products(ctx, fifty, 50)
    small = await statements(counter, client.get(f"/api/v1/products?category={one}&limit=100"))
    large = await statements(counter, client.get(f"/api/v1/products?category={fifty}&limit=100"))
    # The page's ids; the bodies of its products, none cached yet (the products, the variants
    # of all of them); the pool's reset after each of the two.
    assert small == large <= 5
    # Another view of the same products (a new cache key): its ids, and the pool's reset. The
    # bodies come from the cache.
    again = await statements(
        counter, client.get(f"/api/v1/products?category={fifty}&limit=100&sort=price")
    )
    assert again == 2


async def test_category_list_statements_do_not_grow(
    counted: tuple[AppContext, QueryCounter, ApiClient],
) -> None:
    ctx, counter, client = counted
    first = await statements(counter, client.get("/api/v1/categories"))
    for _ in range(20):
        await category(ctx)
    assert await statements(counter, client.get("/api/v1/categories")) == first


async def test_cart_statements_do_not_grow_with_lines(
    counted: tuple[AppContext, QueryCounter, ApiClient], make_counted_user: UserFactory
) -> None:
    ctx, counter, client = counted
    few, many = await category(ctx), await category(ctx)
    few_ids, many_ids = await seed_products(ctx, few, 1), await seed_products(ctx, many, 50)
    code = f"NPLUS{uuid.uuid4().hex[:6]}"
    await ctx.pool.execute(
        "INSERT INTO promotions (code, kind, value) VALUES ($1, 'percent', 5)", code
    )
    counts = []
    for ids in (few_ids, many_ids):
        user, token = await make_counted_user.create("customer")
        await ctx.pool.execute(
            "INSERT INTO carts (user_id, promotion_code) VALUES ($1, $2)", user.id, code
        )
        await ctx.pool.executemany(
            """INSERT INTO cart_items (user_id, product_id, variant_id, quantity)
               SELECT $1, $2, id, 1 FROM product_variants WHERE product_id = $2""",
            [(user.id, i) for i in ids],
        )
        read = await statements(counter, client.get("/api/v1/cart", token=token))
        added = await statements(
            counter,
            client.post(
                "/api/v1/cart/items", json={"product_id": ids[0], "quantity": 1}, token=token
            ),
        )
        counts.append((read, added))
        assert len((await client.get("/api/v1/cart", token=token)).json()["items"]) == len(ids)
    assert counts[0] == counts[1]
    assert counts[0][0] <= 3  # lines, promotion, and the pool's reset on release


async def test_promotion_list_statements_do_not_grow(
    counted: tuple[AppContext, QueryCounter, ApiClient], make_counted_user: UserFactory
) -> None:
    ctx, counter, client = counted
    _, admin = await make_counted_user.create("admin")
    first = await statements(counter, client.get("/api/v1/promotions?limit=100", token=admin))
    await ctx.pool.executemany(
        "INSERT INTO promotions (code, kind, value) VALUES ($1, 'fixed', 100)",
        [(f"MANY{uuid.uuid4().hex[:8]}",) for _ in range(30)],
    )
    assert (
        await statements(counter, client.get("/api/v1/promotions?limit=100", token=admin)) == first
    )


async def test_checkout_and_cancel_statements_do_not_grow_with_lines(
    counted: tuple[AppContext, QueryCounter, ApiClient], make_counted_user: UserFactory
) -> None:
    """Taking the stock, counting the units sold and giving the stock back on a cancel are one
    statement each, whatever the number of lines."""
    ctx, counter, client = counted
    _, admin = await make_counted_user.create("admin")
    counts = []
    for size in (1, 20):
        ids = await seed_products(ctx, await category(ctx), size)
        user, token = await make_counted_user.create("customer")
        await ctx.pool.execute("INSERT INTO carts (user_id) VALUES ($1)", user.id)
        await ctx.pool.executemany(
            """INSERT INTO cart_items (user_id, product_id, variant_id, quantity)
               SELECT $1, $2, id, 2 FROM product_variants WHERE product_id = $2""",
            [(user.id, i) for i in ids],
        )
        before = counter.count
        placed = await client.post(
            "/api/v1/orders", json={}, token=token, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        assert placed.status == 201, placed
        checkout = counter.count - before
        order = placed.json()
        assert len(order["items"]) == size
        before = counter.count
        cancelled = await client.post(f"/api/v1/orders/{order['id']}/cancel", token=admin)
        assert cancelled.status == 200, cancelled
        counts.append((checkout, counter.count - before))
        stock = await ctx.pool.fetch(
            "SELECT stock FROM product_variants WHERE product_id = ANY($1::bigint[])", ids
        )
        assert [r["stock"] for r in stock] == [999] * size  # all given back
        sold = await ctx.pool.fetch(
            "SELECT units_sold FROM product_stats WHERE product_id = ANY($1::bigint[])", ids
        )
        assert [r["units_sold"] for r in sold] == [0] * size  # counted, then taken back
    assert counts[0] == counts[1], counts
