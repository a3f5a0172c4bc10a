"""Product statistics: the admin aggregates, and the writes behind them (bulk views, the
units_sold reconciliation)."""

from __future__ import annotations

import logging
from typing import TypeAlias

import asyncpg

log = logging.getLogger(__name__)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool

# Window name → interval; the order is the response's.
WINDOWS = (("last_24h", "24 hours"), ("last_7d", "7 days"), ("last_30d", "30 days"))


async def order_figures(conn: Executor) -> dict[str, dict[str, tuple[int, int]]]:
    """status → window → (count, revenue in minor units), over orders of the last 30 days."""
    columns = ", ".join(
        f"count(*) FILTER (WHERE created_at >= now() - interval '{interval}') AS count_{name}, "
        f"coalesce(sum(total) FILTER (WHERE created_at >= now() - interval '{interval}'), 0)"
        f"::bigint AS revenue_{name}"
        for name, interval in WINDOWS
    )
    rows = await conn.fetch(
        f"""SELECT status, {columns} FROM orders
             WHERE created_at >= now() - interval '30 days' GROUP BY status"""
    )
    return {
        row["status"]: {name: (row[f"count_{name}"], row[f"revenue_{name}"]) for name, _ in WINDOWS}
        for row in rows
    }


async def top_products(conn: Executor, by: str, limit: int) -> list[asyncpg.Record]:
    """Products with the most `views` or `units_sold` (ties: lower id first); zeros left out."""
    column = {"views": "s.views", "units_sold": "s.units_sold"}[by]
    return await conn.fetch(
        f"""SELECT p.id AS product_id, p.sku, p.name, s.views, s.units_sold
              FROM product_stats s JOIN products p ON p.id = s.product_id
             WHERE {column} > 0
             ORDER BY {column} DESC, p.id
             LIMIT $1""",
        limit,
    )


async def add_views(pool: asyncpg.Pool, ids: list[int], views: list[int]) -> None:
    """Add views to product_stats, in ascending product id (one row order for every writer:
    concurrent flushes cannot deadlock); views of ids without a product are dropped."""
    await pool.execute(
        """INSERT INTO product_stats (product_id, views)
           SELECT t.product_id, t.views
             FROM unnest($1::bigint[], $2::bigint[]) AS t(product_id, views)
             JOIN products p ON p.id = t.product_id
            ORDER BY t.product_id
           ON CONFLICT (product_id) DO UPDATE
              SET views = product_stats.views + EXCLUDED.views, updated_at = now()""",
        ids,
        views,
    )


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
