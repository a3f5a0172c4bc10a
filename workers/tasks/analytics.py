"""Product analytics: views counted in memory on the read path, units sold reconciled.

Views are too frequent to write one by one: each gateway counts them in a dict (`ViewCounter`)
and adds the counts to `product_stats.views` in one statement every `VIEW_FLUSH_INTERVAL`
seconds and on shutdown. The 6-hourly job flushes what its own process holds, recomputes
`units_sold` from the orders (the checkout keeps it current; this repairs any drift) and
retires the cached `GET /stats/products` so the new figures are served.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import asyncpg

from server import metrics

if TYPE_CHECKING:
    from server.context import AppContext

log = logging.getLogger(__name__)

VIEW_FLUSH_INTERVAL = 30.0


class ViewCounter:
    """Views per product since the last flush; one dict update per view."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def record_view(self, product_id: int) -> None:
        counts = self._counts
        counts[product_id] = counts.get(product_id, 0) + 1

    def take(self) -> dict[int, int]:
        """Everything counted so far; the counter starts again from empty."""
        counts, self._counts = self._counts, {}
        return counts

    def give_back(self, counts: dict[int, int]) -> None:
        """Return counts a failed flush could not write, so they are written next time."""
        for product_id, views in counts.items():
            self.record_view_many(product_id, views)

    def record_view_many(self, product_id: int, views: int) -> None:
        self._counts[product_id] = self._counts.get(product_id, 0) + views

    def pending(self) -> int:
        return sum(self._counts.values())


async def flush_views(pool: asyncpg.Pool, counter: ViewCounter) -> int:
    """Add the counted views to product_stats; returns how many views were taken (views of
    ids without a product are dropped)."""
    counts = counter.take()
    if not counts:
        return 0
    ids = sorted(counts)  # one row order for every writer: concurrent flushes cannot deadlock
    try:
        await pool.execute(
            """INSERT INTO product_stats (product_id, views)
               SELECT t.product_id, t.views
                 FROM unnest($1::bigint[], $2::bigint[]) AS t(product_id, views)
                 JOIN products p ON p.id = t.product_id
                ORDER BY t.product_id
               ON CONFLICT (product_id) DO UPDATE
                  SET views = product_stats.views + EXCLUDED.views, updated_at = now()""",
            ids,
            [counts[i] for i in ids],
        )
    except BaseException:
        counter.give_back(counts)
        raise
    total = sum(counts.values())
    metrics.VIEWS_FLUSHED.inc(total)
    return total


async def reconcile_units_sold(pool: asyncpg.Pool, *, attempts: int = 3) -> int:
    """Set units_sold to the units of every order not cancelled; returns rows corrected.

    Runs at REPEATABLE READ: if a checkout changes a row after our snapshot, the update fails
    with a serialization error instead of overwriting the newer figure, and is retried.
    """
    for attempt in range(1, attempts + 1):
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                corrected = await conn.fetchval(_RECONCILE_SQL)
                return int(corrected or 0)
        except asyncpg.SerializationError:
            if attempt == attempts:
                raise
            log.info("units_sold reconciliation raced a checkout; retrying")
    return 0


_RECONCILE_SQL = """
WITH sold AS (
    SELECT oi.product_id, sum(oi.quantity)::bigint AS units
      FROM order_items oi JOIN orders o ON o.id = oi.order_id
     WHERE o.status <> 'cancelled'
     GROUP BY oi.product_id
), target AS (
    SELECT coalesce(s.product_id, ps.product_id) AS product_id, coalesce(s.units, 0) AS units
      FROM sold s FULL JOIN product_stats ps ON ps.product_id = s.product_id
), changed AS (
    INSERT INTO product_stats AS ps (product_id, units_sold)
    SELECT t.product_id, t.units FROM target t ORDER BY t.product_id
    ON CONFLICT (product_id) DO UPDATE
       SET units_sold = EXCLUDED.units_sold, updated_at = now()
     WHERE ps.units_sold IS DISTINCT FROM EXCLUDED.units_sold
    RETURNING 1
)
SELECT count(*) FROM changed
"""


async def refresh_product_analytics(ctx: AppContext) -> dict[str, int]:
    """The 6-hourly job: flush this process's views, reconcile units sold, refresh the stats."""
    # Imported here: the stats service imports the context, which imports this module.
    from server.services.stats import CACHE_NAMESPACE as STATS_NAMESPACE

    flushed = await flush_views(ctx.pool, ctx.views)
    corrected = await reconcile_units_sold(ctx.pool)
    await ctx.cache.bump(STATS_NAMESPACE)
    if corrected:
        log.warning("product analytics: corrected units_sold of %d product(s)", corrected)
    return {"views_flushed": flushed, "units_sold_corrected": corrected}
