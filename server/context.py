"""AppContext: everything a request needs that outlives it, built once and passed down."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from server import metrics
from server.cache import Cache
from server.config import Settings
from server.db import migrations
from server.db.embedded import EmbeddedPostgres
from server.db.pool import create_pool
from server.jobs import JobQueue
from server.live import LiveHub
from server.ratelimit import RequestLimiter
from server.services.payments.provider import PaymentProvider
from server.services.payments.providers import build_provider
from server.services.tokens import TokenService
from server.views import ViewCounter

if TYPE_CHECKING:
    from taskiq import AsyncBroker

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    pool: asyncpg.Pool
    redis: Any | None = None  # redis.asyncio.Redis when REDIS_URL is set
    embedded: EmbeddedPostgres | None = None
    tokens: TokenService = field(init=False)
    limiter: RequestLimiter = field(init=False)
    cache: Cache = field(init=False)
    views: ViewCounter = field(init=False)
    # The taskiq broker and the job port over it (server/jobs.py): plugged in by the process's
    # composition (workers.broker.attach_jobs); None in a context without background jobs.
    broker: AsyncBroker | None = field(default=None, init=False)
    jobs: JobQueue | None = field(default=None, init=False)
    # PAYMENT_PROVIDER's provider; None when the store takes no payments through the gateway.
    payments: PaymentProvider | None = field(init=False)
    # Live updates to stream connections (server/live.py), through Redis when configured.
    live: LiveHub = field(init=False)

    def __post_init__(self) -> None:
        self.payments = build_provider(self.settings)
        self.live = LiveHub(
            self.redis,
            max_connections=self.settings.stream_max_connections,
            max_per_user=self.settings.stream_max_per_user,
        )
        self.tokens = TokenService(self.settings)
        self.limiter = RequestLimiter(self.settings, self.redis)
        self.cache = Cache(self.redis)
        self.views = ViewCounter()
        self._before_close: list[Callable[[], Awaitable[None]]] = []

    def record_product_view(self, product_id: int) -> None:
        """Count a product view in memory; the gateway flushes the counts to product_stats."""
        self.views.record_view(product_id)

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` first when the context closes, while the pool is still open."""
        self._before_close.append(callback)

    async def close(self) -> None:
        for callback in self._before_close:
            await callback()
        await self.pool.close()
        await self.cache.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            self.embedded.stop()


def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The configured URL, or a started embedded server when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir)
    return embedded.start(), embedded


async def build_context(settings: Settings, *, apply_migrations: bool | None = None) -> AppContext:
    """Connect to PostgreSQL (and Redis), migrating first in development and testing."""
    dsn, embedded = resolve_database_url(settings)
    pool = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    if apply_migrations is None:
        apply_migrations = not settings.is_production
    if apply_migrations:
        async with pool.acquire() as conn:
            await migrations.migrate(conn)
    metrics.watch_pool(pool)
    redis = None
    if settings.redis_url:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return AppContext(settings=settings, pool=pool, redis=redis, embedded=embedded)
