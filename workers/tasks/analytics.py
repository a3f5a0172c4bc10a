"""The 6-hourly product analytics job: flush this process's counted views, recompute
`units_sold` from the orders (the checkout keeps it current; this repairs any drift) and retire
the cached `GET /stats/products` so the new figures are served. The SQL is in server/db/stats.py,
the view counter in server/views.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.db.stats import reconcile_units_sold
from server.services.stats import CACHE_NAMESPACE as STATS_NAMESPACE
from server.views import flush_views

if TYPE_CHECKING:
    from server.context import AppContext

log = logging.getLogger(__name__)


async def refresh_product_analytics(ctx: AppContext) -> dict[str, int]:
    """The 6-hourly job: flush this process's views, reconcile units sold, refresh the stats."""
    flushed = await flush_views(ctx.pool, ctx.views)
    corrected = await reconcile_units_sold(ctx.pool)
    await ctx.cache.bump(STATS_NAMESPACE)
    if corrected:
        log.warning("product analytics: corrected units_sold of %d product(s)", corrected)
    return {"views_flushed": flushed, "units_sold_corrected": corrected}
