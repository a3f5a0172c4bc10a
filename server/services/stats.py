"""Admin statistics, cached: order figures for 1 hour, product rankings for 6 hours.

The one cache seam is `cached()`, over the shared `ctx.cache` (server/cache.py: a process LRU in
front of Redis when REDIS_URL is set), namespace "stats". `generated_at` tells the figures' age.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec

from server.context import AppContext
from server.db import stats as repo

ORDER_STATS_TTL = 3600.0
PRODUCT_STATS_TTL = 6 * 3600.0
TOP_PRODUCTS = 10
CACHE_NAMESPACE = "stats"


class StatusFigures(msgspec.Struct):
    count: int
    revenue: int


class StatusBreakdown(msgspec.Struct):
    """Orders created in the window, by their current status; revenue is the sum of totals."""

    pending: StatusFigures
    paid: StatusFigures
    shipped: StatusFigures
    delivered: StatusFigures
    cancelled: StatusFigures


class OrderStats(msgspec.Struct):
    currency: str
    generated_at: datetime
    last_24h: StatusBreakdown
    last_7d: StatusBreakdown
    last_30d: StatusBreakdown


class ProductFigures(msgspec.Struct):
    product_id: int
    sku: str
    name: str
    views: int
    units_sold: int


class ProductStats(msgspec.Struct):
    generated_at: datetime
    top_by_views: list[ProductFigures]
    top_by_units_sold: list[ProductFigures]


def cached(
    ctx: AppContext, key: str, ttl: float, load: Callable[[], Awaitable[msgspec.Struct]]
) -> Awaitable[bytes]:
    """The encoded figures from the shared cache (process LRU + Redis when configured)."""

    async def compute() -> bytes:
        return msgspec.json.encode(await load())

    return ctx.cache.get_or_compute(CACHE_NAMESPACE, key, ttl, compute)


_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")


async def load_order_stats(ctx: AppContext) -> OrderStats:
    figures = await repo.order_figures(ctx.pool)

    def window(name: str) -> StatusBreakdown:
        return StatusBreakdown(
            **{
                status: StatusFigures(*figures.get(status, {}).get(name, (0, 0)))
                for status in _STATUSES
            }
        )

    return OrderStats(
        ctx.settings.store_currency, datetime.now(UTC), *(window(name) for name, _ in repo.WINDOWS)
    )


async def order_stats_json(ctx: AppContext) -> bytes:
    """OrderStats as JSON, computed at most once per ORDER_STATS_TTL."""
    return await cached(ctx, "orders", ORDER_STATS_TTL, lambda: load_order_stats(ctx))


async def load_product_stats(ctx: AppContext) -> ProductStats:
    async with ctx.pool.acquire() as conn:
        by_views = await repo.top_products(conn, "views", TOP_PRODUCTS)
        by_units = await repo.top_products(conn, "units_sold", TOP_PRODUCTS)
    return ProductStats(
        datetime.now(UTC),
        [ProductFigures(**dict(r)) for r in by_views],
        [ProductFigures(**dict(r)) for r in by_units],
    )


async def product_stats_json(ctx: AppContext) -> bytes:
    """ProductStats as JSON, computed at most once per PRODUCT_STATS_TTL."""
    return await cached(ctx, "products", PRODUCT_STATS_TTL, lambda: load_product_stats(ctx))
