"""Read-only aggregates for the admin statistics."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

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
