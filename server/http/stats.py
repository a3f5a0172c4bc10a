"""REST admin statistics (cached: orders 1 h, products 6 h)."""

from __future__ import annotations

from typing import ClassVar

from server.http.base import ApiHandler
from server.openapi import Operation
from server.services import stats
from server.services.stats import OrderStats, ProductStats


class OrderStatsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Order counts and revenue by status, last 24 h / 7 d / 30 d",
            response=OrderStats,
            description="Orders created in each window, grouped by their current status; "
            "revenue is the sum of their totals in minor units. Cached for 1 hour "
            "(`generated_at` says when it was computed).",
        ),
    }

    async def get(self) -> None:
        self.send_json(await stats.order_stats_json(self.ctx))


class ProductStatsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Top products by views and by units sold",
            response=ProductStats,
            description=f"The top {stats.TOP_PRODUCTS} of each, from the analytics job's "
            "product_stats (every 6 h). Cached for 6 hours.",
        ),
    }

    async def get(self) -> None:
        self.send_json(await stats.product_stats_json(self.ctx))


routes = [
    (r"/api/v1/stats/orders/?", OrderStatsHandler),
    (r"/api/v1/stats/products/?", ProductStatsHandler),
]
