"""Redis killed (SIGKILL) under load and brought back on the same port, no gateway restart.

While it is gone: reads keep being served (the cache and limiter fall back to PostgreSQL and
the process's own budgets), >= 99 % 2xx; a checkout either succeeds or is refused with a 503
problem+json, never a 500. After it is back: checkouts succeed and the cache reads Redis again
within 10 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from server import metrics
from server.cache import PRODUCTS
from tests.conftest import RedisServer, UserFactory, running_gateway, wait_for
from tests.integration.chaos_support import Load, Shopper, share_2xx, statuses
from tests.orders_support import create_product

pytestmark = pytest.mark.chaos

OUTAGE = 3.0
RECOVERY_BOUND = 10.0


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    """A Redis of this test's own: killing the shared one would disturb the others."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def redis_hits() -> float:
    return metrics.CACHE_LOOKUPS.labels(PRODUCTS, "redis_hit")._value.get()


async def test_redis_dies_under_load_and_comes_back(
    database_url: str, own_redis: RedisServer
) -> None:
    async with running_gateway(database_url, "fast", REDIS_URL=own_redis.url) as (api, ctx):
        products = [await create_product(ctx.pool, stock=100_000) for _ in range(20)]
        users = UserFactory(ctx)
        shoppers = [Shopper(u.id, token) for u, token in [await users.create() for _ in range(4)]]
        load = Load(api, ctx.pool, products, shoppers)
        load.start()
        await asyncio.sleep(1.5)

        killed = time.monotonic()
        own_redis.kill()
        await asyncio.sleep(OUTAGE)
        own_redis.start()
        back = time.monotonic()

        async def checkout_succeeds_after_restart() -> bool:
            return any(o.status == 201 for o in load.between(back, time.monotonic(), "checkout"))

        await wait_for(checkout_succeeds_after_restart, timeout=RECOVERY_BOUND)
        recovered = time.monotonic() - back
        hits_before = redis_hits()

        async def cache_reads_redis_again() -> bool:
            return redis_hits() > hits_before

        await wait_for(cache_reads_redis_again, timeout=RECOVERY_BOUND)
        await asyncio.sleep(0.5)
        await load.stop()

    reads = load.between(killed, back, "read")
    assert share_2xx(reads) >= 0.99, statuses(reads)
    assert share_2xx(load.between(0, float("inf"), "read")) >= 0.99
    during = load.between(killed, back, "checkout")
    assert during, "no checkout was tried during the outage"
    for outcome in load.between(0, float("inf"), "checkout"):
        assert outcome.status in (201, 503), (outcome.status, outcome.body[:300])
        if outcome.status == 503:
            problem = orjson.loads(outcome.body)
            assert problem["status"] == 503 and problem["detail"]
    assert recovered < RECOVERY_BOUND
    # The process kept its Redis client: the new server has the cache's keys again.
    client = Redis.from_url(own_redis.url)
    try:
        assert await client.dbsize() > 0
    finally:
        await client.aclose()
