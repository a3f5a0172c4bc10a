"""AppContext: everything a request needs that outlives it, built once and passed down."""

from __future__ import annotations

import logging
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
    # The taskiq broker (see workers.broker), set by build_context.
    broker: AsyncBroker | None = field(default=None, init=False)
    # How services start a job now (server/jobs.py); set by build_context with the broker.
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

    def record_product_view(self, product_id: int) -> None:
        """Count a product view in memory; the gateway flushes the counts to product_stats."""
        self.views.record_view(product_id)

    async def close(self) -> None:
        if self.broker is not None:
            from workers.broker import drain

            await drain(self.broker)  # in-process jobs still need the pool
        await self.pool.close()
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
    context = AppContext(settings=settings, pool=pool, redis=redis, embedded=embedded)
    # The composition root of the process: the one place server/ reaches up into workers/.
    from workers.broker import BrokerJobs, build_broker  # the tasks import this module

    context.broker = build_broker(settings, context)
    context.jobs = BrokerJobs(context)
    return context
