"""AppContext: everything a request needs that outlives it, built once and passed down."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from server.config import Settings
from server.db import migrations
from server.db.embedded import EmbeddedPostgres
from server.db.pool import create_pool
from server.services.tokens import TokenService

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    pool: asyncpg.Pool
    redis: Any | None = None  # redis.asyncio.Redis when REDIS_URL is set
    embedded: EmbeddedPostgres | None = None
    tokens: TokenService = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = TokenService(self.settings)

    async def close(self) -> None:
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
    redis = None
    if settings.redis_url:
        from redis.asyncio import Redis

        redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return AppContext(settings=settings, pool=pool, redis=redis, embedded=embedded)
