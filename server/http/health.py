"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from server.http.base import ApiHandler

_CHECK_TIMEOUT = 2.0


class LivenessHandler(ApiHandler):
    async def get(self) -> None:
        self.send_json({"status": "ok"})


class ReadinessHandler(ApiHandler):
    async def get(self) -> None:
        checks = {"database": await self._check_database()}
        if self.ctx.redis is not None:
            checks["redis"] = await self._check_redis()
        ready = all(v == "ok" for v in checks.values())
        if not ready:
            self.set_header("Retry-After", "5")
        self.send_json({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    async def _check_database(self) -> str:
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                await self.ctx.pool.fetchval("SELECT 1")
        except Exception as exc:  # any failure means not ready; say which
            return f"error: {type(exc).__name__}"
        return "ok"

    async def _check_redis(self) -> str:
        assert self.ctx.redis is not None
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                await self.ctx.redis.ping()
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok"


routes = [
    (r"/healthz/?", LivenessHandler),
    (r"/readyz/?", ReadinessHandler),
]
