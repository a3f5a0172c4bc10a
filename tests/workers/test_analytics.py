"""Product analytics: views counted in memory and flushed, units sold reconciled."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from server.context import AppContext
from server.db.stats import reconcile_units_sold
from server.domain.principal import Principal
from server.services import orders, stats
from server.views import ViewCounter, flush_views
from tests.orders_support import Accounts, create_product, units_sold
from workers.tasks.analytics import refresh_product_analytics


def order_input(items: dict[int, int]) -> orders.OrderInput:
    return orders.parse_order_input(
        {"items": [{"product_id": p, "quantity": q} for p, q in items.items()]}
    )


async def views_of(ctx: AppContext, product_id: int) -> int:
    views: int | None = await ctx.pool.fetchval(
        "SELECT views FROM product_stats WHERE product_id = $1", product_id
    )
    return views or 0


async def test_counted_views_are_added_to_product_stats(ctx: AppContext) -> None:
    a = await create_product(ctx.pool, stock=5)
    b = await create_product(ctx.pool, stock=5)
    counter = ViewCounter()
    for product_id in (a, a, a, b):
        counter.record_view(product_id)

    assert await flush_views(ctx.pool, counter) == 4
    assert await views_of(ctx, a) == 3 and await views_of(ctx, b) == 1
    # The counter starts again from empty; the next flush adds to the stored figure.
    counter.record_view(a)
    assert await flush_views(ctx.pool, counter) == 1 and await flush_views(ctx.pool, counter) == 0
    assert await views_of(ctx, a) == 4


async def test_concurrent_flushes_lose_no_view(ctx: AppContext) -> None:
    ids = [await create_product(ctx.pool, stock=1) for _ in range(5)]
    counters = [ViewCounter() for _ in range(4)]
    for counter in counters:
        for product_id in reversed(ids):
            counter.record_view(product_id)
    await asyncio.gather(*(flush_views(ctx.pool, c) for c in counters))
    assert [await views_of(ctx, p) for p in ids] == [4] * 5


async def test_views_of_a_failed_flush_are_kept_for_the_next(ctx: AppContext) -> None:
    product_id = await create_product(ctx.pool, stock=1)
    counter = ViewCounter()
    counter.record_view(product_id)
    counter.record_view(product_id)
    counter.record_view(2**62)  # an id without a product is dropped, never an error
    closed = await asyncpg.create_pool(ctx.settings.database_url, min_size=1, max_size=1)
    await closed.close()

    with pytest.raises(asyncpg.InterfaceError):
        await flush_views(closed, counter)

    assert counter.pending() == 3
    assert await flush_views(ctx.pool, counter) == 3
    assert await views_of(ctx, product_id) == 2 and counter.pending() == 0


async def test_units_sold_are_reconciled_from_orders_not_cancelled(ctx: AppContext) -> None:
    user, _ = await Accounts(ctx).create()
    principal = Principal(user.id, user.role)
    product = await create_product(ctx.pool, stock=50)
    kept = await orders.create_order(ctx, principal, order_input({product: 3}))
    dropped = await orders.create_order(ctx, principal, order_input({product: 4}))
    assert kept.order is not None and dropped.order is not None
    await orders.cancel_order(ctx, principal, dropped.order.id)
    assert await units_sold(ctx.pool, product) == 3
    # Drift (a crash between writes, a manual fix): the job repairs it.
    await ctx.pool.execute(
        "UPDATE product_stats SET units_sold = 40 WHERE product_id = $1", product
    )

    first, second = await asyncio.gather(
        reconcile_units_sold(ctx.pool), reconcile_units_sold(ctx.pool)
    )

    assert first + second >= 1
    assert await units_sold(ctx.pool, product) == 3
    assert await reconcile_units_sold(ctx.pool) == 0  # nothing left to correct


async def test_the_analytics_job_refreshes_the_cached_product_stats(ctx: AppContext) -> None:
    product = await create_product(ctx.pool, stock=5, name="Much viewed kettle")
    before = orjson.loads(await stats.product_stats_json(ctx))
    assert product not in [p["product_id"] for p in before["top_by_views"]]
    for _ in range(10_000):
        ctx.record_product_view(product)

    result = await refresh_product_analytics(ctx)

    assert result["views_flushed"] == 10_000
    after = orjson.loads(await stats.product_stats_json(ctx))
    top = after["top_by_views"][0]
    assert top["product_id"] == product and top["views"] == 10_000
