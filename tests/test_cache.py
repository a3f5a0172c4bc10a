"""The two-layer cache (process LRU + Redis): hits, invalidation, stampedes, Redis outages,
and product reads through two gateway processes sharing one Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest_asyncio
from redis.asyncio import Redis

from server import metrics
from server.cache import PENDING_BUMP_RETRY, Cache
from server.context import AppContext
from server.runtime import Gateway
from tests.conftest import (
    ApiClient,
    RedisServer,
    UserFactory,
    free_port,
    make_settings,
    start_gateway,
)
from workers.broker import build_context_with_jobs


class Source:
    """A value to cache, and how many times it was computed."""

    def __init__(self, value: bytes = b"v1", delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.value


@pytest_asyncio.fixture
async def redis_clients(redis_url: str) -> AsyncIterator[Callable[[], Redis]]:
    """Independent Redis clients, one per simulated process."""
    clients: list[Redis] = []

    def client() -> Redis:
        clients.append(Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0))
        return clients[-1]

    yield client
    for c in clients:
        await c.aclose()  # type: ignore[attr-defined]  # (types-redis predates aclose)


def lookups(namespace: str, result: str) -> float:
    return metrics.sample("cache_lookups_total", {"namespace": namespace, "result": result})


# ---- one process -------------------------------------------------------------------------------


async def test_freshness_taken_before_a_read_is_retired_by_a_write_during_it() -> None:
    cache, source = Cache(None), Source(b"old", delay=0.05)
    terms = cache.freshness("t-replay")  # as a handler takes it, before reading
    read = asyncio.ensure_future(cache.get_or_compute("t-replay", "k", 60, source))
    await asyncio.sleep(0.01)  # the read is under way ...
    await cache.bump("t-replay")  # ... when a write commits
    assert await read == b"old"  # what was read may be stale
    assert not terms.still_valid()  # so it is never served again
    fresh = cache.freshness("t-replay")
    assert fresh.still_valid() and fresh.max_age == cache.local_ttl
    hits = lookups("t-replay", "local_hit")
    fresh.count_hit()
    assert lookups("t-replay", "local_hit") == hits + 1


async def test_a_copy_offered_from_a_local_entry_expires_with_it(
    redis_clients: Callable[[], Redis],
) -> None:
    """A replay offer must not outlive the local entry it was served from: that entry's expiry
    is how late this process may see another's invalidation of it."""
    cache = Cache(redis_clients())
    await cache.get_or_compute("t-offer", "k", 60, Source())
    stored_by = time.monotonic()
    await asyncio.sleep(0.4)
    assert await cache.get_or_compute("t-offer", "k", 60, Source(b"other")) == b"v1"  # local
    terms = cache.freshness("t-offer", key="k")
    now = time.monotonic()
    assert terms.still_valid()
    assert terms.expires_at(now) <= stored_by + cache.local_ttl < now + terms.max_age


async def test_freshness_needs_a_version_read_within_the_bound(
    redis_clients: Callable[[], Redis],
) -> None:
    a, b = Cache(redis_clients()), Cache(redis_clients())
    assert not a.freshness("t-rterms").still_valid()  # never read: unknown, not valid
    await a.get_or_compute("t-rterms", "k", 60, Source())
    terms = a.freshness("t-rterms")
    assert terms.still_valid()
    await b.bump("t-rterms")  # another process writes
    deadline = time.monotonic() + a.version_ttl + 0.5
    while terms.still_valid():  # stale after the version bound at the latest
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await a.get_or_compute("t-rterms", "k", 60, Source())  # reads the new version
    assert not terms.still_valid() and a.freshness("t-rterms").still_valid()


async def test_a_value_is_computed_once_then_served_from_memory() -> None:
    cache, source = Cache(None), Source(b'{"id": 1}')
    hits = lookups("t-local", "local_hit")
    assert await cache.get_or_compute("t-local", "1", 60, source) == b'{"id": 1}'
    assert await cache.get_or_compute("t-local", "1", 60, source) == b'{"id": 1}'
    assert source.calls == 1 and lookups("t-local", "local_hit") == hits + 1


async def test_a_bump_retires_every_key_of_its_namespace_only() -> None:
    cache = Cache(None)
    item, page, other = Source(b"item"), Source(b"page"), Source(b"other")
    for ns, key, source in (
        ("t-ns", "id:1", item),
        ("t-ns", "list:x", page),
        ("t-other", "id:1", other),
    ):
        await cache.get_or_compute(ns, key, 60, source)
    await cache.bump("t-ns")
    for ns, key, source in (
        ("t-ns", "id:1", item),
        ("t-ns", "list:x", page),
        ("t-other", "id:1", other),
    ):
        await cache.get_or_compute(ns, key, 60, source)
    assert (item.calls, page.calls, other.calls) == (2, 2, 1)


async def test_invalidate_retires_only_the_named_keys() -> None:
    cache = Cache(None)
    sold, other, page = Source(b"sold"), Source(b"other"), Source(b"page")
    for key, source in (("id:1", sold), ("id:2", other), ("list:x", page)):
        await cache.get_or_compute("t-inv", key, 60, source)
    sold.value = b"sold, one fewer"
    await cache.invalidate("t-inv", ["id:1"])
    assert await cache.get_or_compute("t-inv", "id:1", 60, sold) == b"sold, one fewer"
    for key, source in (("id:2", other), ("list:x", page)):
        await cache.get_or_compute("t-inv", key, 60, source)
    assert (sold.calls, other.calls, page.calls) == (2, 1, 1)


async def test_a_fill_racing_an_invalidation_is_served_but_not_kept() -> None:
    cache, source = Cache(None), Source(b"read before the write", delay=0.05)
    read = asyncio.ensure_future(cache.get_or_compute("t-inv-race", "id:1", 60, source))
    await asyncio.sleep(0.01)  # the fill has read PostgreSQL ...
    await cache.invalidate("t-inv-race", ["id:1"])  # ... when a write commits
    assert await read == b"read before the write"
    source.value, source.delay = b"after", 0.0
    assert await cache.get_or_compute("t-inv-race", "id:1", 60, source) == b"after"
    assert source.calls == 2


async def test_freshness_of_a_key_is_retired_by_its_invalidation_only() -> None:
    cache = Cache(None)
    mine = cache.freshness("t-inv-replay", key="id:1")
    theirs = cache.freshness("t-inv-replay", key="id:2")
    whole = cache.freshness("t-inv-replay")
    await cache.invalidate("t-inv-replay", ["id:1"])
    assert not mine.still_valid()
    assert theirs.still_valid() and whole.still_valid()


async def test_concurrent_misses_compute_once() -> None:
    cache, source = Cache(None), Source(delay=0.05)
    values = await asyncio.gather(
        *(cache.get_or_compute("t-flight", "k", 60, source) for _ in range(50))
    )
    assert values == [b"v1"] * 50 and source.calls == 1


async def test_a_failed_computation_reaches_every_waiter_and_is_not_cached() -> None:
    cache, calls = Cache(None), 0

    async def failing() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise LookupError("no such product")

    results = await asyncio.gather(
        *(cache.get_or_compute("t-fail", "k", 60, failing) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, LookupError) for r in results) and calls == 1
    assert await cache.get_or_compute("t-fail", "k", 60, Source(b"ok")) == b"ok"


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    cache, source = Cache(None), Source(delay=0.1)
    first = asyncio.create_task(cache.get_or_compute("t-cancel", "k", 60, source))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.get_or_compute("t-cancel", "k", 60, source))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == b"v1" and source.calls == 1


async def test_the_local_layer_is_bounded_and_entries_expire() -> None:
    cache = Cache(None, max_entries=3)
    sources = [Source(str(i).encode()) for i in range(4)]
    for i, source in enumerate(sources):
        await cache.get_or_compute("t-lru", str(i), 60, source)
    await cache.get_or_compute("t-lru", "0", 60, sources[0])  # evicted: least recently used
    await cache.get_or_compute("t-lru", "3", 60, sources[3])  # still there
    assert [s.calls for s in sources] == [2, 1, 1, 1]
    short = Source()
    await cache.get_or_compute("t-ttl", "k", 0.05, short)
    await asyncio.sleep(0.08)
    await cache.get_or_compute("t-ttl", "k", 0.05, short)
    assert short.calls == 2


# ---- processes sharing Redis -------------------------------------------------------------------


async def test_another_process_reads_the_value_from_redis(
    redis_clients: Callable[[], Redis],
) -> None:
    a, b = Cache(redis_clients()), Cache(redis_clients())
    source = Source(b"shared")
    redis_hits = lookups("t-shared", "redis_hit")
    assert await a.get_or_compute("t-shared", "k", 60, source) == b"shared"
    assert await b.get_or_compute("t-shared", "k", 60, source) == b"shared"
    assert source.calls == 1 and lookups("t-shared", "redis_hit") == redis_hits + 1


async def test_a_bump_reaches_another_process_within_the_version_bound(
    redis_clients: Callable[[], Redis],
) -> None:
    a, b = Cache(redis_clients()), Cache(redis_clients())
    source = Source(b"old")
    await a.get_or_compute("t-bump", "k", 300, source)
    assert await b.get_or_compute("t-bump", "k", 300, source) == b"old"

    source.value = b"new"
    await a.bump("t-bump")
    bumped_at = time.monotonic()

    assert await a.get_or_compute("t-bump", "k", 300, source) == b"new"  # at once, here
    while await b.get_or_compute("t-bump", "k", 300, source) != b"new":
        assert time.monotonic() - bumped_at < b.version_ttl + 0.2
        await asyncio.sleep(0.02)
    assert source.calls == 2  # B found A's new value in Redis


async def test_an_invalidation_reaches_another_process_within_the_local_bound(
    redis_clients: Callable[[], Redis],
) -> None:
    # A generous Redis timeout: this is about propagation; a slow Redis (a busy machine) must
    # not turn into the fail-open path, which recomputes (tested on its own below).
    a = Cache(redis_clients(), redis_timeout=2.0)
    b = Cache(redis_clients(), redis_timeout=2.0)
    sold, other = Source(b"10 left"), Source(b"other")
    for cache in (a, b):
        await cache.get_or_compute("t-inv-shared", "id:1", 300, sold)
        await cache.get_or_compute("t-inv-shared", "id:2", 300, other)
    sold.value = b"9 left"
    await a.invalidate("t-inv-shared", ["id:1"])
    invalidated_at = time.monotonic()
    assert await a.get_or_compute("t-inv-shared", "id:1", 300, sold) == b"9 left"
    while await b.get_or_compute("t-inv-shared", "id:1", 300, sold) != b"9 left":
        assert time.monotonic() - invalidated_at < b.local_ttl + 0.2
        await asyncio.sleep(0.02)
    assert sold.calls == 2  # B found A's refill in Redis
    assert await b.get_or_compute("t-inv-shared", "id:2", 300, other) == b"other"
    assert other.calls == 1  # the other product was never retired


async def test_a_stale_fill_in_another_process_is_not_stored_in_redis(
    redis_clients: Callable[[], Redis],
) -> None:
    """B reads PostgreSQL before A's write commits and finishes after A invalidated the key:
    B's caller gets what B read, but neither Redis nor B keeps it for later readers."""
    a, b = Cache(redis_clients()), Cache(redis_clients())
    slow = Source(b"stale", delay=0.1)
    read = asyncio.ensure_future(b.get_or_compute("t-inv-stale", "id:1", 300, slow))
    await asyncio.sleep(0.03)
    await a.invalidate("t-inv-stale", ["id:1"])
    assert await read == b"stale"
    fresh = Source(b"fresh")
    assert await a.get_or_compute("t-inv-stale", "id:1", 300, fresh) == b"fresh"
    assert fresh.calls == 1  # Redis did not hold the stale fill
    await asyncio.sleep(b.local_ttl)  # B may keep its own copy that long, then reads Redis
    assert await b.get_or_compute("t-inv-stale", "id:1", 300, fresh) == b"fresh"
    assert fresh.calls == 1


async def test_processes_missing_the_same_key_compute_it_once(
    redis_clients: Callable[[], Redis],
) -> None:
    caches = [Cache(redis_clients()) for _ in range(3)]
    source = Source(delay=0.1)
    values = await asyncio.gather(
        *(c.get_or_compute("t-stampede", "k", 60, source) for c in caches for _ in range(5))
    )
    assert values == [b"v1"] * 15 and source.calls == 1


async def test_without_an_answer_from_redis_values_are_computed_and_served() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    cache, source = Cache(dead, retry_after=30.0), Source(b"from postgres")
    errors_before = sum(
        metrics.sample("cache_redis_errors_total", {"operation": op})
        for op in ("version", "get", "set", "lock", "unlock", "bump")
    )
    try:
        assert await cache.get_or_compute("t-down", "k", 60, source) == b"from postgres"
        errors = sum(
            metrics.sample("cache_redis_errors_total", {"operation": op})
            for op in ("version", "get", "set", "lock", "unlock", "bump")
        )
        assert errors == errors_before + 1  # then Redis is left alone for retry_after
        started = time.perf_counter()
        for key in range(20):
            await cache.get_or_compute("t-down", str(key), 60, source)
        assert time.perf_counter() - started < 0.1
        await cache.bump("t-down")  # a write still retires the local copies
        source.value = b"changed"
        assert await cache.get_or_compute("t-down", "k", 60, source) == b"changed"
    finally:
        await dead.aclose()  # type: ignore[attr-defined]


async def test_a_bump_redis_missed_is_published_when_it_is_back(
    redis_server: RedisServer, redis_clients: Callable[[], Redis]
) -> None:
    client = redis_clients()
    cache = Cache(client, version_ttl=0.05, retry_after=0.05)
    await cache.get_or_compute("t-replay", "k", 60, Source())
    redis_server.stop()
    try:
        await cache.bump("t-replay")
    finally:
        redis_server.start()
    await asyncio.sleep(0.1)
    await cache.get_or_compute("t-replay", "k", 60, Source())
    assert await client.get("cache:t-replay:version") == b"1"


# ---- a batch of keys (a list page's items) ----------------------------------------------------


class Batch:
    """Values for `Cache.get_many`: every key in `values` exists; the calls are recorded."""

    def __init__(self, values: dict[str, bytes], delay: float = 0.0) -> None:
        self.values = values
        self.delay = delay
        self.calls: list[list[str]] = []

    async def __call__(self, keys: list[str]) -> dict[str, bytes]:
        self.calls.append(keys)
        if self.delay:
            await asyncio.sleep(self.delay)
        return {k: self.values[k] for k in keys if k in self.values}


async def test_a_batch_computes_only_what_no_layer_holds_and_shares_entries(
    redis_clients: Callable[[], Redis],
) -> None:
    a, b = Cache(redis_clients()), Cache(redis_clients())
    batch = Batch({"id:1": b"one", "id:2": b"two", "id:3": b"three"})
    assert await a.get_or_compute("t-many", "id:1", 60, Source(b"one")) == b"one"
    counts = {r: lookups("t-many-items", r) for r in ("local_hit", "redis_hit", "miss")}

    found = await a.get_many(
        "t-many", ["id:1", "id:2", "id:9"], 60, batch, counted_as="t-many-items"
    )
    assert found == {"id:1": b"one", "id:2": b"two"}  # id:9 does not exist
    assert batch.calls == [["id:2", "id:9"]]  # id:1 was the single read's entry
    found = await b.get_many(
        "t-many", ["id:3", "id:2", "id:1"], 60, batch, counted_as="t-many-items"
    )
    assert found == {"id:1": b"one", "id:2": b"two", "id:3": b"three"}
    assert batch.calls[1:] == [["id:3"]]  # B found id:1 and id:2 in Redis
    assert {r: lookups("t-many-items", r) - counts[r] for r in counts} == {
        "local_hit": 1,
        "redis_hit": 2,
        "miss": 3,
    }
    # What the batch stored is the single read's entry too, in both processes.
    untouched = Source(b"not this")
    assert await b.get_or_compute("t-many", "id:3", 60, untouched) == b"three"
    assert await a.get_or_compute("t-many", "id:2", 60, untouched) == b"two"
    assert untouched.calls == 0
    # A key that did not exist is not cached: it is asked for again.
    await a.get_many("t-many", ["id:9"], 60, batch, counted_as="t-many-items")
    assert batch.calls[-1] == ["id:9"]


async def test_a_batch_racing_an_invalidation_is_served_but_not_kept(
    redis_clients: Callable[[], Redis],
) -> None:
    """The batch read PostgreSQL before a write committed and ends after its invalidation: its
    caller gets what it read, but neither layer keeps that value."""
    a, b = Cache(redis_clients()), Cache(redis_clients())
    slow = Batch({"id:1": b"stale", "id:2": b"other"}, delay=0.1)
    read = asyncio.ensure_future(
        a.get_many("t-many-race", ["id:1", "id:2"], 60, slow, counted_as="t")
    )
    await asyncio.sleep(0.03)
    await b.invalidate("t-many-race", ["id:1"])  # another process's write
    assert await read == {"id:1": b"stale", "id:2": b"other"}
    fresh = Batch({"id:1": b"fresh", "id:2": b"not this"})
    expected = {"id:1": b"fresh", "id:2": b"other"}
    assert await b.get_many("t-many-race", ["id:1", "id:2"], 60, fresh, counted_as="t") == expected
    assert fresh.calls == [["id:1"]]  # Redis kept the other key, not the stale one
    await asyncio.sleep(a.local_ttl)  # A may keep its own copy that long, then reads Redis
    assert await a.get_many("t-many-race", ["id:1", "id:2"], 60, fresh, counted_as="t") == expected
    assert len(fresh.calls) == 1
    # The same in the process that wrote (it remembers the retirement, no Redis needed).
    local, slow = Cache(None), Batch({"id:1": b"stale"}, delay=0.1)
    read = asyncio.ensure_future(local.get_many("t-many-race", ["id:1"], 60, slow, counted_as="t"))
    await asyncio.sleep(0.03)
    await local.invalidate("t-many-race", ["id:1"])
    assert await read == {"id:1": b"stale"}
    fresh = Batch({"id:1": b"fresh"})
    assert await local.get_many("t-many-race", ["id:1"], 60, fresh, counted_as="t") == {
        "id:1": b"fresh"
    }


async def test_a_batch_stores_again_after_redis_lost_its_scripts(
    redis_clients: Callable[[], Redis],
) -> None:
    client = redis_clients()
    cache = Cache(client)
    await cache.get_many("t-many-noscript", ["id:1"], 60, Batch({"id:1": b"a"}), counted_as="t")
    await client.script_flush()
    await cache.get_many("t-many-noscript", ["id:2"], 60, Batch({"id:2": b"b"}), counted_as="t")
    assert await client.get("cache:t-many-noscript:0:id:2") == b"b"


async def test_a_batch_without_an_answer_from_redis_is_computed() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    cache = Cache(dead, retry_after=30.0)
    batch = Batch({"id:1": b"one", "id:2": b"two"})
    try:
        found = await cache.get_many("t-many-down", ["id:1", "id:2"], 60, batch, counted_as="t")
        assert found == {"id:1": b"one", "id:2": b"two"} and batch.calls == [["id:1", "id:2"]]
        # Kept locally for the local bound only (other processes' writes are not seen here).
        await cache.get_many("t-many-down", ["id:1"], 60, batch, counted_as="t")
        assert len(batch.calls) == 1
    finally:
        await dead.aclose()  # type: ignore[attr-defined]


# ---- through the gateways ----------------------------------------------------------------------


class Gateways:
    """Two gateway processes' worth of state (own context, pool, cache) on one DB and Redis."""

    def __init__(self) -> None:
        self.contexts: list[AppContext] = []
        self.gateways: list[Gateway] = []
        self.clients: list[ApiClient] = []

    async def start(self, database_url: str, redis_url: str, http_impl: str, count: int) -> None:
        for _ in range(count):
            ctx = await build_context_with_jobs(make_settings(database_url, REDIS_URL=redis_url))
            gateway, addresses = await start_gateway(ctx, http_impl)
            self.contexts.append(ctx)
            self.gateways.append(gateway)
            self.clients.append(ApiClient(f"http://127.0.0.1:{addresses.http_port}"))

    async def stop(self) -> None:
        for client in self.clients:
            client.close()
        for gateway in self.gateways:
            await gateway.stop_servers(grace=1.0)
        for ctx in self.contexts:
            await ctx.close()


@pytest_asyncio.fixture
async def two_gateways(
    database_url: str, redis_url: str, http_impl: str
) -> AsyncIterator[list[ApiClient]]:
    gateways = Gateways()
    await gateways.start(database_url, redis_url, http_impl, 2)
    yield gateways.clients
    await gateways.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until `check` passed; fails after `within`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within, f"not seen within {within}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def new_product(api: ApiClient, admin: str, **fields: Any) -> dict[str, Any]:
    body = {
        "sku": f"CACHE-{time.monotonic_ns()}",
        "name": "Cached kettle",
        "price": 1000,
        "stock": 10,
        **fields,
    }
    response = await api.post("/api/v1/products", json=body, token=admin)
    assert response.status == 201, response
    created: dict[str, Any] = response.json()
    return created


async def test_a_patch_is_seen_by_both_gateways(
    two_gateways: list[ApiClient], make_user: UserFactory
) -> None:
    """The product page is exact within the 1 s bound, and so is its item in a list page (the
    list's view is cached for LIST_CACHE_TTL, its items are the product pages)."""
    a, b = two_gateways
    _, admin = await make_user.create("admin")
    product = await new_product(a, admin, name="Blue kettle")
    path = f"/api/v1/products/{product['id']}"
    listing = "/api/v1/products?q=Blue&limit=100"
    for api in (a, b):  # both layers of both processes hold the product and the list
        assert (await api.get(path)).json()["price"] == 1000
        assert [
            p["price"] for p in (await api.get(listing)).json()["items"] if p["id"] == product["id"]
        ] == [1000]
    old_etag = (await b.get(path)).headers["ETag"]

    assert (await a.patch(path, json={"price": 1500}, token=admin)).status == 200

    assert (await a.get(path)).json()["price"] == 1500  # the writing process: at once

    async def b_sees_it() -> bool:
        response = await b.get(path)
        return bool(response.json()["price"] == 1500 and response.headers["ETag"] != old_etag)

    async def b_lists_it() -> bool:
        items = (await b.get(listing)).json()["items"]
        return [p["price"] for p in items if p["id"] == product["id"]] == [1500]

    assert await eventually(b_sees_it, within=1.5) <= 1.5  # the documented 1 s version bound
    assert await eventually(b_lists_it, within=1.5) <= 1.5  # the same bound

    assert (await a.delete(path, token=admin)).status == 204
    await eventually(lambda: _status_is(b, path, 404), within=1.5)


async def _status_is(api: ApiClient, path: str, status: int) -> bool:
    return (await api.get(path)).status == status


async def test_reads_and_writes_survive_redis_going_away(
    two_gateways: list[ApiClient], make_user: UserFactory, redis_server: RedisServer
) -> None:
    a, b = two_gateways
    _, admin = await make_user.create("admin")
    product = await new_product(a, admin)
    path = f"/api/v1/products/{product['id']}"
    assert (await b.get(path)).status == 200
    errors_before = metrics.sample(
        "cache_redis_errors_total", {"operation": "version"}
    ) + metrics.sample("cache_redis_errors_total", {"operation": "get"})

    redis_server.stop()
    try:
        for api in (a, b):
            response = await api.get(path)
            assert response.status == 200 and response.json()["id"] == product["id"]
            assert (await api.get("/api/v1/products?limit=5")).status == 200
        patched = await a.patch(path, json={"stock": 77}, token=admin)
        assert patched.status == 200 and patched.json()["stock"] == 77
        assert (await a.get(path)).json()["stock"] == 77  # the writer sees its write
        # The other process holds at most a local copy, which expires within its local TTL.
        await eventually(lambda: _stock_is(b, path, 77), within=3.0)
        ready = await a.get("/readyz")
        assert ready.status == 503 and ready.json()["checks"]["redis"].startswith("error")
        errors_after = metrics.sample(
            "cache_redis_errors_total", {"operation": "version"}
        ) + metrics.sample("cache_redis_errors_total", {"operation": "get"})
        assert errors_after > errors_before
    finally:
        redis_server.start()
    # Redis is back (empty): reads go through it again and writes reach the other process.
    await asyncio.sleep(1.1)
    assert (await a.patch(path, json={"stock": 5}, token=admin)).status == 200
    await eventually(lambda: _stock_is(b, path, 5), within=2.5)


async def _stock_is(api: ApiClient, path: str, stock: int) -> bool:
    response = await api.get(path)
    return response.status == 200 and bool(orjson.loads(response.body)["stock"] == stock)


async def test_concurrent_batches_compute_each_key_once(
    redis_clients: Callable[[], Redis],
) -> None:
    """A list page read by many at once, its items missing: one query, whatever the overlap."""
    for cache in (Cache(None), Cache(redis_clients())):
        namespace = f"t-many-flight-{id(cache)}"
        slow = Batch({f"id:{n}": f"v{n}".encode() for n in range(1, 5)}, delay=0.05)
        before = lookups("t", "coalesced")
        pages = [["id:1", "id:2", "id:3"]] * 20 + [["id:3", "id:4", "id:9"]]
        found = await asyncio.gather(
            *(cache.get_many(namespace, page, 60, slow, counted_as="t") for page in pages)
        )
        assert found[0] == {"id:1": b"v1", "id:2": b"v2", "id:3": b"v3"}
        assert all(f == found[0] for f in found[:20])
        assert found[20] == {"id:3": b"v3", "id:4": b"v4"}
        assert slow.calls == [["id:1", "id:2", "id:3"], ["id:4", "id:9"]]
        assert lookups("t", "coalesced") - before == 19 * 3 + 1


async def test_a_batch_started_before_an_invalidation_is_not_joined(
    redis_clients: Callable[[], Redis],
) -> None:
    cache = Cache(redis_clients())
    slow = Batch({"id:1": b"stale"}, delay=0.1)
    first = asyncio.ensure_future(cache.get_many("t-many-join", ["id:1"], 60, slow, counted_as="t"))
    await asyncio.sleep(0.03)
    await cache.invalidate("t-many-join", ["id:1"])  # this process's write committed
    fresh = Batch({"id:1": b"fresh"})
    assert await cache.get_many("t-many-join", ["id:1"], 60, fresh, counted_as="t") == {
        "id:1": b"fresh"
    }
    assert await first == {"id:1": b"stale"}


async def test_a_failed_batch_reaches_every_waiter_and_is_not_kept() -> None:
    cache = Cache(None)

    async def failing(keys: list[str]) -> dict[str, bytes]:
        await asyncio.sleep(0.02)
        raise ConnectionError("PostgreSQL went away")

    reads = [cache.get_many("t-many-fail", ["id:1"], 60, failing, counted_as="t") for _ in range(3)]
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    ok = Batch({"id:1": b"one"})
    assert await cache.get_many("t-many-fail", ["id:1"], 60, ok, counted_as="t") == {"id:1": b"one"}


async def test_an_invalidation_redis_missed_reaches_other_processes_once_it_answers() -> None:
    """Redis stalls (its data kept, as it is after an append-only restart) while one process
    retires a key; once Redis answers again the others must stop serving the old value soon,
    even though the writer reads nothing more (a worker, say)."""
    server = RedisServer()
    server.start()
    assert server.process is not None
    writer_client = Redis.from_url(server.url, socket_timeout=1.0)
    reader_client = Redis.from_url(server.url, socket_timeout=1.0)
    writer, reader = Cache(writer_client), Cache(reader_client)
    try:
        assert await reader.get_or_compute("t-stall", "k", 60, Source(b"old")) == b"old"
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            await writer.invalidate("t-stall", ["k"])  # times out: Redis keeps the old value
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        answered = time.monotonic()
        bound = PENDING_BUMP_RETRY + writer.retry_after + reader.version_ttl + reader.local_ttl
        while (value := await reader.get_or_compute("t-stall", "k", 60, Source(b"new"))) != b"new":
            assert time.monotonic() - answered < bound + 0.5, "the old value outlived the bound"
            await asyncio.sleep(0.05)
        assert value == b"new"
    finally:
        await writer.close()
        await reader.close()
        await writer_client.aclose()  # type: ignore[attr-defined]
        await reader_client.aclose()  # type: ignore[attr-defined]
        server.stop()
