"""GET /metrics: the Prometheus text exposition of this process (nginx lets only private
networks reach it)."""

from __future__ import annotations

from typing import ClassVar

from server import metrics
from server.http.base import ApiHandler
from server.openapi import Operation


class MetricsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Prometheus metrics of this process",
            content_type=metrics.CONTENT_TYPE,
            description="HTTP requests by route template and status, gRPC calls by method and "
            "code, database statement latency and pool use, cache hits and misses, "
            "rate-limit decisions, background task runs and durations. Production "
            "nginx serves it to private networks only.",
        ),
    }

    async def get(self) -> None:
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(metrics.render())


routes = [
    (r"/metrics/?", MetricsHandler),
]
