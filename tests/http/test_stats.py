"""Admin statistics: order figures by status and window, product rankings, caching."""

from __future__ import annotations

import uuid

import pytest

from server.context import AppContext
from server.services import stats
from tests.conftest import ApiClient, UserFactory
from tests.orders_support import create_product

ZERO = {"count": 0, "revenue": 0}


@pytest.fixture(scope="module")
async def admin(make_user: UserFactory) -> str:
    _, token = await make_user.create("admin")
    return token


async def insert_order(ctx: AppContext, user_id: int, status: str, total: int, age: str) -> None:
    await ctx.pool.execute(
        """INSERT INTO orders (user_id, status, subtotal, discount, tax, total, currency,
                               created_at)
           VALUES ($1, $2, $3, 0, 0, $3, 'USD', now() - $4::text::interval)""",
        user_id,
        status,
        total,
        age,
    )


async def test_order_stats_count_and_sum_by_status_and_window(
    api: ApiClient, admin: str, ctx: AppContext, make_user: UserFactory
) -> None:
    user, _ = await make_user.create("customer")
    await ctx.pool.execute("DELETE FROM orders")  # this module's database; runs once per impl
    await insert_order(ctx, user.id, "paid", 1000, "1 hour")
    await insert_order(ctx, user.id, "paid", 2000, "3 days")
    await insert_order(ctx, user.id, "cancelled", 500, "20 days")
    await insert_order(ctx, user.id, "delivered", 9999, "40 days")
    await ctx.cache.bump(stats.CACHE_NAMESPACE)
    response = await api.get("/api/v1/stats/orders", token=admin)
    assert response.status == 200
    body = response.json()
    assert body["currency"] == "USD" and body["generated_at"]
    assert body["last_24h"] == {
        "pending": ZERO,
        "paid": {"count": 1, "revenue": 1000},
        "shipped": ZERO,
        "delivered": ZERO,
        "cancelled": ZERO,
    }
    assert body["last_7d"]["paid"] == {"count": 2, "revenue": 3000}
    assert body["last_30d"]["cancelled"] == {"count": 1, "revenue": 500}
    assert body["last_30d"]["delivered"] == ZERO

    # Cached for an hour: a new order does not show until the cache is dropped.
    await insert_order(ctx, user.id, "paid", 7, "1 minute")
    assert (await api.get("/api/v1/stats/orders", token=admin)).json() == body
    await ctx.cache.bump(stats.CACHE_NAMESPACE)
    fresh = (await api.get("/api/v1/stats/orders", token=admin)).json()
    assert fresh["last_24h"]["paid"] == {"count": 2, "revenue": 1007}


async def test_product_stats_rank_by_views_and_units_sold(
    api: ApiClient, admin: str, ctx: AppContext
) -> None:
    await ctx.pool.execute("DELETE FROM product_stats")
    run = uuid.uuid4().hex[:6]
    ids = []
    for n, (views, sold) in enumerate([(5, 0), (50, 2), (1, 9)]):
        product_id = await create_product(
            ctx.pool, stock=1, price=100, name=f"Stat {n}", sku=f"STATS-{run}-{n}"
        )
        await ctx.pool.execute(
            "INSERT INTO product_stats (product_id, views, units_sold) VALUES ($1, $2, $3)",
            product_id,
            views,
            sold,
        )
        ids.append(product_id)
    await ctx.cache.bump(stats.CACHE_NAMESPACE)
    body = (await api.get("/api/v1/stats/products", token=admin)).json()
    assert [p["product_id"] for p in body["top_by_views"]] == [ids[1], ids[0], ids[2]]
    assert [p["product_id"] for p in body["top_by_units_sold"]] == [ids[2], ids[1]]
    assert body["top_by_views"][0] == {
        "product_id": ids[1],
        "sku": f"STATS-{run}-1",
        "name": "Stat 1",
        "views": 50,
        "units_sold": 2,
    }


async def test_stats_are_for_admins_only(api: ApiClient, make_user: UserFactory) -> None:
    _, customer = await make_user.create("customer")
    for path in ("/api/v1/stats/orders", "/api/v1/stats/products"):
        assert (await api.get(path)).status == 401
        assert (await api.get(path, token=customer)).status == 403
