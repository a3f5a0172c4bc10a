"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import msgspec

from server.http.base import ApiHandler
from server.openapi import Operation

_CHECK_TIMEOUT = 2.0


class Liveness(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    # "ok", or "error: <kind>" for the dependency that failed.
    checks: dict[str, str]


class LivenessHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation("Liveness: 200 while the event loop runs", response=Liveness),
    }

    async def get(self) -> None:
        self.send_json({"status": "ok"})


class ReadinessHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Readiness: PostgreSQL (and Redis when configured) answer",
            response=Readiness,
            also={503: "a dependency is down; `checks` names it (with Retry-After)"},
        ),
    }

    async def get(self) -> None:
        checks = {"database": await self._check_database()}
        if self.ctx.redis is not None:
            checks["redis"] = await self._check_redis()
        ready = all(v == "ok" for v in checks.values())
        if not ready:
            self.set_header("Retry-After", "5")
        self.send_json(
            {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
        )

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
