"""A two-layer read cache: a small per-process LRU in front of Redis, values as ready bytes.

Values are the serialised response bodies, so a hit is written to the socket as it is.

Invalidation uses versioned namespaces. Every key embeds its namespace's version
(`cache:products:17:<key>`); `bump("products")` increments the version (Redis `INCR`), which
retires every key of the namespace at once, lists included, without finding them.

Freshness bounds:
- in the process that bumps: the next read sees the change (the new version is used at once);
- in every other process sharing the Redis: within `version_ttl` (1 s), because a process
  re-reads a namespace's version from Redis at most that long after it last did;
- without Redis (embedded development): one process, the bump is immediate; entries keep
  their full TTL, so N processes without Redis do not see each other's writes.
Local entries never outlive `local_ttl` (2 s) when Redis is configured, so even a bump that
could not reach Redis (it is down) leaves other processes stale for at most that long, and
it is replayed to Redis once Redis answers again.

Stampedes: one computation per key at a time in a process (the others await the same task),
and across processes a short Redis `SET NX` lock lets one process compute while the others
poll for its result for up to `lock_wait`, then compute themselves.

Fails open: any Redis error or timeout is counted, logged once per outage, and the value is
computed from PostgreSQL; for `retry_after` seconds Redis is then left alone, so an outage
costs nothing per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from server import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Compute = Callable[[], Awaitable[bytes]]

# Product pages and lists: bumped by product and category writes and by every stock change.
PRODUCTS = "products"

# Deletes the lock only if it still holds our token (it may have expired and been retaken).
_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class _RedisUnavailable(Exception):
    """Redis did not answer in time or failed; the caller falls back to PostgreSQL."""


class Cache:
    def __init__(
        self,
        redis: Any | None,
        *,
        local_ttl: float = 2.0,
        version_ttl: float = 1.0,
        max_entries: int = 10_000,
        redis_timeout: float = 0.25,
        retry_after: float = 1.0,
        lock_ttl: float = 5.0,
        lock_wait: float = 0.5,
        prefix: str = "cache",
    ) -> None:
        self.redis = redis
        self.local_ttl = local_ttl
        self.version_ttl = version_ttl
        self.max_entries = max_entries
        self.redis_timeout = redis_timeout
        self.retry_after = retry_after
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self.prefix = prefix
        self._local: OrderedDict[tuple[str, int, str], tuple[float, bytes]] = OrderedDict()
        # namespace -> (monotonic time the version was read, version)
        self._versions: dict[str, tuple[float, int]] = {}
        self._flights: dict[tuple[str, int, str], asyncio.Task[bytes]] = {}
        self._version_flights: dict[str, asyncio.Task[int]] = {}
        self._pending_bumps: set[str] = set()
        self._redis_down_until = 0.0
        self._counters: dict[tuple[str, str], Any] = {}

    # ---- public API -------------------------------------------------------------------------

    async def get_or_compute(self, namespace: str, key: str, ttl: float, compute: Compute) -> bytes:
        """The cached bytes for `key`, or `compute()`'s result, cached for `ttl` seconds.

        `compute` reads PostgreSQL and serialises; an exception from it is not cached and
        reaches every caller waiting for that key.
        """
        version = await self._version(namespace)
        slot = (namespace, version, key)
        entry = self._local.get(slot)
        if entry is not None:
            if entry[0] > time.monotonic():
                self._local.move_to_end(slot)
                self._count(namespace, "local_hit")
                return entry[1]
            del self._local[slot]
        flight = self._flights.get(slot)
        if flight is not None:
            self._count(namespace, "coalesced")
            return await asyncio.shield(flight)
        task = asyncio.ensure_future(self._fill(slot, ttl, compute))
        self._flights[slot] = task
        task.add_done_callback(lambda done: self._land(slot, done))
        # Shielded: a caller that goes away does not cancel the others' computation.
        return await asyncio.shield(task)

    async def bump(self, namespace: str) -> None:
        """Retire every cached key of `namespace` (call after the write commits)."""
        metrics.CACHE_INVALIDATIONS.labels(namespace).inc()
        current = self._versions.get(namespace)
        local_next = (current[1] if current else 0) + 1
        if self.redis is None:
            self._versions[namespace] = (math.inf, local_next)
            return
        try:
            version = int(await self._redis("bump", self.redis.incr(self._version_key(namespace))))
        except _RedisUnavailable:
            self._pending_bumps.add(namespace)
            version = local_next
        self._versions[namespace] = (time.monotonic(), version)

    def known_version(self, namespace: str) -> int | None:
        """The namespace's version when this process knows it to be current without asking Redis
        (read within `version_ttl`, or no Redis at all); None when it would have to ask."""
        cached = self._versions.get(namespace)
        if self.redis is None:
            return cached[1] if cached is not None else 0
        if cached is not None and time.monotonic() - cached[0] < self.version_ttl:
            return cached[1]
        return None

    def replay_terms(
        self, namespace: str, on_replay: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Terms to offer a response built from `namespace` for replay (server/http/replay.py,
        `ApiHandler.offer_replay`): valid while the namespace keeps the version known now (take
        them before reading, so a write during the read retires what is read), for no longer
        than a local entry lives; each replay counted as a local hit, then `on_replay`."""
        version = self.known_version(namespace)

        def still_valid() -> bool:
            return version is not None and self.known_version(namespace) == version

        def replayed() -> None:
            self._count(namespace, "local_hit")
            if on_replay is not None:
                on_replay()

        return {"max_age": self.local_ttl, "still_valid": still_valid, "on_replay": replayed}

    # ---- versions ---------------------------------------------------------------------------

    def _version_key(self, namespace: str) -> str:
        return f"{self.prefix}:{namespace}:version"

    async def _version(self, namespace: str) -> int:
        cached = self._versions.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < self.version_ttl:
            return cached[1]
        if self.redis is None:
            return 0
        if not self._redis_usable():
            return cached[1] if cached is not None else 0
        flight = self._version_flights.get(namespace)
        if flight is None:
            flight = asyncio.ensure_future(self._read_version(namespace))
            self._version_flights[namespace] = flight
            flight.add_done_callback(lambda _: self._version_flights.pop(namespace, None))
        return await asyncio.shield(flight)

    async def _read_version(self, namespace: str) -> int:
        assert self.redis is not None
        cached = self._versions.get(namespace)
        key = self._version_key(namespace)
        try:
            if namespace in self._pending_bumps:
                # A bump made while Redis was away: publish it now so others see it too.
                version = int(await self._redis("bump", self.redis.incr(key)))
                self._pending_bumps.discard(namespace)
            else:
                raw = await self._redis("version", self.redis.get(key))
                version = int(raw) if raw is not None else 0
        except _RedisUnavailable:
            return cached[1] if cached is not None else 0
        self._versions[namespace] = (time.monotonic(), version)
        return version

    # ---- filling a key ----------------------------------------------------------------------

    def _land(self, slot: tuple[str, int, str], task: asyncio.Task[bytes]) -> None:
        self._flights.pop(slot, None)
        if not task.cancelled():
            task.exception()  # retrieved here, raised to the callers through the shield

    async def _fill(self, slot: tuple[str, int, str], ttl: float, compute: Compute) -> bytes:
        namespace = slot[0]
        if self.redis is None:
            value = await compute()
            self._count(namespace, "miss")
            self._store(slot, value, ttl)
            return value
        redis_key = f"{self.prefix}:{namespace}:{slot[1]}:{slot[2]}"
        shared = await self._redis_get(redis_key)
        token = await self._lock(redis_key) if shared is None else ""
        if shared is None and token is None:
            shared = await self._await_other(redis_key)
        if shared is not None:
            self._count(namespace, "redis_hit")
            self._store(slot, shared, min(ttl, self.local_ttl))
            return shared
        try:
            value = await compute()
            self._count(namespace, "miss")
            await self._redis_set(redis_key, value, ttl)
        finally:
            if token:
                await self._unlock(redis_key, token)
        self._store(slot, value, min(ttl, self.local_ttl))
        return value

    def _store(self, slot: tuple[str, int, str], value: bytes, ttl: float) -> None:
        self._local[slot] = (time.monotonic() + ttl, value)
        self._local.move_to_end(slot)
        while len(self._local) > self.max_entries:
            self._local.popitem(last=False)

    async def _redis_get(self, key: str) -> bytes | None:
        if not self._redis_usable():
            return None
        assert self.redis is not None
        try:
            value = await self._redis("get", self.redis.get(key))
        except _RedisUnavailable:
            return None
        return bytes(value) if value is not None else None

    async def _redis_set(self, key: str, value: bytes, ttl: float) -> None:
        if not self._redis_usable():
            return
        assert self.redis is not None
        try:
            await self._redis("set", self.redis.set(key, value, ex=max(1, math.ceil(ttl))))
        except _RedisUnavailable:
            pass

    async def _lock(self, key: str) -> str | None:
        """A token when this process may compute ("" when Redis is away); None when another is."""
        if not self._redis_usable():
            return ""
        assert self.redis is not None
        token = os.urandom(8).hex()
        try:
            acquired = await self._redis(
                "lock", self.redis.set(f"{key}:lock", token, nx=True, px=int(self.lock_ttl * 1000))
            )
        except _RedisUnavailable:
            return ""
        return token if acquired else None

    async def _unlock(self, key: str, token: str) -> None:
        if not self._redis_usable():
            return
        assert self.redis is not None
        try:
            await self._redis("unlock", self.redis.eval(_RELEASE_LOCK, 1, f"{key}:lock", token))
        except _RedisUnavailable:
            pass  # it expires after lock_ttl

    async def _await_other(self, key: str) -> bytes | None:
        """Poll for the value another process is computing, up to `lock_wait`."""
        deadline = time.monotonic() + self.lock_wait
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            value = await self._redis_get(key)
            if value is not None or not self._redis_usable():
                return value
        return None

    # ---- Redis, failing open ----------------------------------------------------------------

    def _redis_usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._redis_down_until

    async def _redis(self, operation: str, call: Coroutine[Any, Any, T]) -> T:
        try:
            async with asyncio.timeout(self.redis_timeout):
                return await call
        except Exception as exc:
            metrics.CACHE_REDIS_ERRORS.labels(operation).inc()
            if time.monotonic() >= self._redis_down_until:
                log.warning(
                    "cache: Redis %s failed (%s: %s); serving from PostgreSQL for %.1fs",
                    operation,
                    type(exc).__name__,
                    exc,
                    self.retry_after,
                )
            self._redis_down_until = time.monotonic() + self.retry_after
            raise _RedisUnavailable(operation) from exc

    def _count(self, namespace: str, result: str) -> None:
        counter = self._counters.get((namespace, result))
        if counter is None:
            counter = metrics.CACHE_LOOKUPS.labels(namespace, result)
            self._counters[(namespace, result)] = counter
        counter.inc()
