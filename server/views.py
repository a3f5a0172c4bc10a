"""Product views, counted in memory on the read path and written in bulk.

Views are too frequent to write one by one: each gateway counts them in a dict (`ViewCounter`,
owned by the AppContext) and adds the counts to `product_stats.views` in one statement every
`VIEW_FLUSH_INTERVAL` seconds (workers/inprocess.py), on shutdown, and in the 6-hourly
analytics job (workers/tasks/analytics.py).
"""

from __future__ import annotations

import asyncpg

from server import metrics
from server.db import stats as stats_db

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
        await stats_db.add_views(pool, ids, [counts[i] for i in ids])
    except BaseException:
        counter.give_back(counts)
        raise
    total = sum(counts.values())
    metrics.VIEWS_FLUSHED.inc(total)
    return total
