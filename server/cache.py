"""A two-layer read cache: a small per-process LRU in front of Redis, values as ready bytes.

Values are the serialised response bodies, so a hit is written to the socket as it is.

Two ways to read: `get_or_compute` for one key, and `get_many` for a page's worth of keys (one
Redis MGET for them all, one computation for the ones no layer holds).

Two ways to retire entries, after the write commits:
- `bump(namespace)` retires every key of a namespace at once without finding them: every key
  embeds its namespace's version (`cache:products:17:<key>`) and a bump increments it (`INCR`);
- `invalidate(namespace, keys)` retires only the named keys (a checkout retires the products it
  sold, not the catalog): it deletes them in Redis and here, and increments a per-key
  generation (`cache:products:gen:<key>`) so that a fill which read PostgreSQL before the write
  committed cannot store its stale value afterwards (the fill reads the generation with the
  value and stores only if it is unchanged, in one Lua script).

Freshness bounds:
- in the process that bumps or invalidates: the next read sees the change;
- in every other process sharing the Redis: a bump within `version_ttl` (1 s), because a process
  re-reads a namespace's version from Redis at most that long after it last did; an invalidated
  key within `local_ttl` (1 s), the longest a process keeps a local copy when Redis is there;
- without Redis (embedded development): one process, the bump is immediate; entries keep
  their full TTL, so N processes without Redis do not see each other's writes.
Local entries never outlive `local_ttl` (1 s) when Redis is configured, so even a bump that
could not reach Redis (it is down) leaves other processes stale for at most that long, and
it is sent to Redis again once Redis answers (an invalidation that could not reach Redis is
sent again as a bump of its whole namespace: the safe superset). A background task retries it
every `PENDING_BUMP_RETRY` seconds, not only when this process next reads the namespace, so
other processes see it within about that plus `version_ttl` of Redis answering again.

Stampedes: one computation per key at a time in a process (the others await the same task;
for `get_many`, the same batch), and across processes, for `get_or_compute`, a short Redis
`SET NX` lock lets one process compute while the others poll for its result for up to
`lock_wait`, then compute themselves.

Fails open: any Redis error or timeout is counted, logged once per outage, and the value is
computed from PostgreSQL; for `retry_after` seconds Redis is then left alone, so an outage
costs nothing per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from redis.exceptions import NoScriptError

from server import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Compute = Callable[[], Awaitable[bytes]]

# Product pages (`id:<n>`): one key invalidated per product write or stock movement; the
# namespace is bumped only when a category delete rewrites many product bodies.
PRODUCTS = "products"
# List and search pages: which products a page shows, in which order (the bodies are read from
# PRODUCTS, so they are exact); a short TTL bounds how late a new, repriced or moved product
# takes its place. Bumped by category writes, which change what a `category=` filter means.
PRODUCT_LISTS = "product-lists"
# The label under which a list page's reads of product pages are counted (Cache.get_many): they
# are parts of a page, not lookups of their own, so they keep out of the namespaces' hit rates.
LIST_ITEMS = "list-items"

# How often a bump Redis could not take is sent again while Redis stays away.
PENDING_BUMP_RETRY = 0.25

# Deletes the lock only if it still holds our token (it may have expired and been retaken).
_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


# Retires keys: deletes each under the namespace's current version and moves its generation on.
# KEYS[1] the version key; ARGV[1] the namespace prefix, ARGV[2] the generation TTL, then keys.
_INVALIDATE = """
local version = redis.call('get', KEYS[1]) or '0'
for i = 3, #ARGV do
  redis.call('del', ARGV[1] .. ':' .. version .. ':' .. ARGV[i])
  local generation = ARGV[1] .. ':gen:' .. ARGV[i]
  redis.call('incr', generation)
  redis.call('expire', generation, ARGV[2])
end
return 1
"""

# Stores a filled value only if its key was not invalidated since the fill read its generation.
# KEYS[1] the value key, KEYS[2] its generation key; ARGV[1] value, ARGV[2] generation read
# ("" when there was none), ARGV[3] TTL in seconds.
_STORE_IF_CURRENT = """
if (redis.call('get', KEYS[2]) or '') ~= ARGV[2] then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""

# A generation outlives any fill that could have read the one before it.
GENERATION_TTL = 3600
# How long this process remembers which keys it retired: far longer than any `Freshness` lasts
# (`local_ttl`) or a fill takes, so neither can miss a retirement.
RETIRED_MEMORY = 60.0


class _RedisUnavailable(Exception):
    """Redis did not answer in time or failed; the caller falls back to PostgreSQL."""


class Freshness:
    """Terms under which a copy of cached data may be served again without asking the cache
    (`Cache.freshness`). Plain fields and methods rather than closures: a replay offer keeps one
    per cached answer, and each closure and cell would be one more object for every garbage
    collection to walk."""

    __slots__ = ("_cache", "_key", "_namespace", "_sequence", "_version", "max_age")

    def __init__(
        self,
        cache: Cache,
        namespace: str,
        key: str | None,
        version: int | None,
        sequence: int,
        max_age: float,
    ) -> None:
        self._cache = cache
        self._namespace = namespace
        self._key = key
        self._version = version
        self._sequence = sequence
        self.max_age = max_age  # seconds, at most

    def expires_at(self, now: float) -> float:
        """When a copy offered at `now` stops standing: `max_age` later, and no later than the
        local entry it was served from expires (that expiry is how late this process may see an
        invalidation made by another; a copy must not outlive it)."""
        deadline = now + self.max_age
        if self._key is not None and self._version is not None:
            entry = self._cache._local.get((self._namespace, self._version, self._key))
            if entry is not None:
                deadline = min(deadline, entry[0])
        return deadline

    def still_valid(self) -> bool:
        cache, namespace = self._cache, self._namespace
        if self._version is None or cache.known_version(namespace) != self._version:
            return False
        return self._key is None or not cache._retired_since(namespace, self._key, self._sequence)

    def count_hit(self) -> None:
        """A copy served is a local hit of its namespace."""
        self._cache._count(self._namespace, "local_hit")


class Cache:
    def __init__(
        self,
        redis: Any | None,
        *,
        local_ttl: float = 1.0,
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
        self._batch_flights: dict[tuple[str, int, str], asyncio.Task[dict[str, bytes]]] = {}
        self._version_flights: dict[str, asyncio.Task[int]] = {}
        self._pending_bumps: set[str] = set()
        self._publisher: asyncio.Task[None] | None = None
        self._redis_down_until = 0.0
        self._counters: dict[tuple[str, str], Any] = {}
        # (namespace, key) -> (sequence number, monotonic time) of its last invalidation here
        self._retired: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._sequence = 0
        if redis is not None:
            self._invalidate_script = redis.register_script(_INVALIDATE)
            self._store_script = redis.register_script(_STORE_IF_CURRENT)

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

    async def get_many(
        self,
        namespace: str,
        keys: Iterable[str],
        ttl: float,
        compute: Callable[[list[str]], Awaitable[dict[str, bytes]]],
        *,
        counted_as: str,
    ) -> dict[str, bytes]:
        """The cached bytes of each of `keys` that has a value: local copies first, then one
        Redis MGET, then one `compute(missing)` for the rest (it returns the keys it found; the
        absent ones are not cached). The entries are `get_or_compute`'s, under the same rules
        (versions, per-key generations, retirements). A key another call in this process is
        computing is awaited, not computed again; there is no cross-process lock: a batch's
        misses cost one query together. Lookups are counted under the label `counted_as`, so
        that the parts of a page do not weigh in the namespace's own hit rate."""
        version = await self._version(namespace)
        sequence = self._sequence
        now = time.monotonic()
        found: dict[str, bytes] = {}
        wanted: list[str] = []
        for key in dict.fromkeys(keys):
            slot = (namespace, version, key)
            entry = self._local.get(slot)
            if entry is not None and entry[0] > now:
                self._local.move_to_end(slot)
                found[key] = entry[1]
                self._count(counted_as, "local_hit")
            else:
                wanted.append(key)
        if not wanted:
            return found
        local_ttl = ttl if self.redis is None else min(ttl, self.local_ttl)
        generations = await self._redis_get_many(namespace, version, wanted, found)
        for key in found.keys() & set(wanted):
            self._count(counted_as, "redis_hit")
            self._store_unless_retired((namespace, version, key), found[key], local_ttl, sequence)
        wanted = [key for key in wanted if key not in found]
        if not wanted:
            return found
        # One computation per key at a time in this process, as get_or_compute's flights: a
        # list page read by many at once, whose items were just retired, costs one query.
        flights: dict[asyncio.Task[dict[str, bytes]], list[str]] = {}
        mine: list[str] = []
        for key in wanted:
            flight = self._batch_flights.get((namespace, version, key))
            if flight is None:
                mine.append(key)
            else:
                flights.setdefault(flight, []).append(key)
        if flights:
            self._count(counted_as, "coalesced", len(wanted) - len(mine))
        if mine:
            task = asyncio.ensure_future(
                self._fill_many(namespace, version, mine, generations, ttl, compute, sequence)
            )
            slots = [(namespace, version, key) for key in mine]
            for slot in slots:
                self._batch_flights[slot] = task
            task.add_done_callback(functools.partial(self._land_many, slots))
            flights[task] = mine
            self._count(counted_as, "miss", len(mine))
        for flight, keys in flights.items():
            # Shielded: a caller that goes away does not cancel the others' computation.
            values = await asyncio.shield(flight)
            found.update((key, values[key]) for key in keys if key in values)
        return found

    async def _fill_many(
        self,
        namespace: str,
        version: int,
        keys: list[str],
        generations: dict[str, str],
        ttl: float,
        compute: Callable[[list[str]], Awaitable[dict[str, bytes]]],
        sequence: int,
    ) -> dict[str, bytes]:
        computed = await compute(keys)
        values = {key: computed[key] for key in keys if key in computed}
        if generations:
            await self._redis_store_many(namespace, version, values, generations, ttl)
        local_ttl = ttl if self.redis is None else min(ttl, self.local_ttl)
        for key, value in values.items():
            self._store_unless_retired((namespace, version, key), value, local_ttl, sequence)
        return values

    def _land_many(
        self, slots: list[tuple[str, int, str]], task: asyncio.Task[dict[str, bytes]]
    ) -> None:
        for slot in slots:
            if self._batch_flights.get(slot) is task:
                del self._batch_flights[slot]
        if not task.cancelled():
            task.exception()  # retrieved here, raised to the callers through the shield

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
            self._pend_bump(namespace)
            version = local_next
        self._versions[namespace] = (time.monotonic(), version)

    async def invalidate(self, namespace: str, keys: Iterable[str]) -> None:
        """Retire only `keys` of `namespace` (call after the write commits)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        metrics.CACHE_INVALIDATIONS.labels(namespace).inc()
        self._sequence += 1
        now = time.monotonic()
        cached = self._versions.get(namespace)
        version = cached[1] if cached is not None else 0  # what reads here use (see _version)
        for key in keys:
            ident = (namespace, key)
            self._retired[ident] = (self._sequence, now)
            self._retired.move_to_end(ident)
            slot = (namespace, version, key)
            self._local.pop(slot, None)
            self._flights.pop(slot, None)  # later readers must not join a stale fill
            self._batch_flights.pop(slot, None)
        self._forget_old_retirements(now)
        if self.redis is None:
            return
        try:
            await self._redis(
                "invalidate",
                self._invalidate_script(
                    keys=[self._version_key(namespace)],
                    args=[f"{self.prefix}:{namespace}", GENERATION_TTL, *keys],
                ),
            )
        except _RedisUnavailable:
            self._pend_bump(namespace)

    def _pend_bump(self, namespace: str) -> None:
        """A retirement Redis did not take: bump the whole namespace there as soon as it answers
        again. Until then other processes may read entries the write should have retired from
        Redis (kept when it stalled, or restored from its append-only file after a restart)."""
        self._pending_bumps.add(namespace)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.ensure_future(self._publish_pending())

    async def _publish_pending(self) -> None:
        assert self.redis is not None
        while self._pending_bumps:
            await asyncio.sleep(PENDING_BUMP_RETRY)
            for namespace in sorted(self._pending_bumps):
                key = self._version_key(namespace)
                try:
                    version = int(await self._redis("bump", self.redis.incr(key)))
                except _RedisUnavailable:
                    break  # still away: try again after the pause
                self._pending_bumps.discard(namespace)
                self._versions[namespace] = (time.monotonic(), version)
                self._redis_down_until = 0.0  # it answers: stop serving around it

    async def close(self) -> None:
        """Stop publishing pending bumps (the process is stopping)."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None and not publisher.done():
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher

    def _forget_old_retirements(self, now: float) -> None:
        horizon = now - RETIRED_MEMORY
        while self._retired:
            ident, (_, when) = next(iter(self._retired.items()))
            if when >= horizon:
                return
            del self._retired[ident]

    def _retired_since(self, namespace: str, key: str, sequence: int) -> bool:
        retired = self._retired.get((namespace, key))
        return retired is not None and retired[0] > sequence

    def known_version(self, namespace: str) -> int | None:
        """The namespace's version when this process knows it to be current without asking Redis
        (read within `version_ttl`, or no Redis at all); None when it would have to ask."""
        cached = self._versions.get(namespace)
        if self.redis is None:
            return cached[1] if cached is not None else 0
        if cached is not None and time.monotonic() - cached[0] < self.version_ttl:
            return cached[1]
        return None

    def freshness(self, namespace: str, *, key: str | None = None) -> Freshness:
        """How long a copy of what is read from `namespace` (and its `key`, when given) now stays
        current: while the namespace keeps the version known now and `key` is not invalidated,
        for no longer than a local entry lives. Take it before reading, so that a write during
        the read retires what is read."""
        return Freshness(
            self, namespace, key, self.known_version(namespace), self._sequence, self.local_ttl
        )

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
        if self._flights.get(slot) is task:
            del self._flights[slot]
        if not task.cancelled():
            task.exception()  # retrieved here, raised to the callers through the shield

    async def _fill(self, slot: tuple[str, int, str], ttl: float, compute: Compute) -> bytes:
        namespace, _, key = slot
        sequence = self._sequence
        if self.redis is None:
            value = await compute()
            self._count(namespace, "miss")
            self._store_unless_retired(slot, value, ttl, sequence)
            return value
        redis_key = f"{self.prefix}:{namespace}:{slot[1]}:{key}"
        generation_key = f"{self.prefix}:{namespace}:gen:{key}"
        shared, generation = await self._redis_get_with_generation(redis_key, generation_key)
        token = await self._lock(redis_key) if shared is None else ""
        if shared is None and token is None:
            shared = await self._await_other(redis_key)
        if shared is not None:
            self._count(namespace, "redis_hit")
            self._store_unless_retired(slot, shared, min(ttl, self.local_ttl), sequence)
            return shared
        try:
            value = await compute()
            self._count(namespace, "miss")
            if generation is not None:
                await self._redis_store(redis_key, generation_key, value, generation, ttl)
        finally:
            if token:
                await self._unlock(redis_key, token)
        self._store_unless_retired(slot, value, min(ttl, self.local_ttl), sequence)
        return value

    def _store_unless_retired(
        self, slot: tuple[str, int, str], value: bytes, ttl: float, sequence: int
    ) -> None:
        # A key invalidated while it was being filled may hold what was read before the write.
        if not self._retired_since(slot[0], slot[2], sequence):
            self._store(slot, value, ttl)

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

    async def _redis_get_with_generation(
        self, key: str, generation_key: str
    ) -> tuple[bytes | None, str | None]:
        """The shared value and its key's generation ("" when never invalidated); the
        generation is None when Redis did not answer (then nothing may be stored there)."""
        if not self._redis_usable():
            return None, None
        assert self.redis is not None
        try:
            value, generation = await self._redis("get", self.redis.mget(key, generation_key))
        except _RedisUnavailable:
            return None, None
        return (
            bytes(value) if value is not None else None,
            generation.decode() if generation is not None else "",
        )

    async def _redis_get_many(
        self, namespace: str, version: int, keys: list[str], found: dict[str, bytes]
    ) -> dict[str, str]:
        """Puts the shared values of `keys` into `found`; returns the generation of each key
        that has none ("" when never invalidated), or {} when Redis did not answer (then
        nothing may be stored there)."""
        if not self._redis_usable():
            return {}
        assert self.redis is not None
        names = [f"{self.prefix}:{namespace}:{version}:{key}" for key in keys]
        names += [f"{self.prefix}:{namespace}:gen:{key}" for key in keys]
        try:
            replies = await self._redis("get", self.redis.mget(names))
        except _RedisUnavailable:
            return {}
        generations: dict[str, str] = {}
        for key, value, generation in zip(keys, replies, replies[len(keys) :], strict=False):
            if value is not None:
                found[key] = bytes(value)
            else:
                generations[key] = generation.decode() if generation is not None else ""
        return generations

    async def _redis_store_many(
        self,
        namespace: str,
        version: int,
        values: dict[str, bytes],
        generations: dict[str, str],
        ttl: float,
    ) -> None:
        """`_redis_store` for several keys in one pipeline (each still its own atomic check)."""
        stored = [key for key in values if key in generations]
        if not stored or not self._redis_usable():
            return
        redis = self.redis
        assert redis is not None

        def pipeline() -> Any:
            pipe = redis.pipeline(transaction=False)
            for key in stored:
                pipe.evalsha(
                    self._store_script.sha,
                    2,
                    f"{self.prefix}:{namespace}:{version}:{key}",
                    f"{self.prefix}:{namespace}:gen:{key}",
                    values[key],
                    generations[key],
                    max(1, math.ceil(ttl)),
                )
            return pipe

        async def send() -> None:
            try:
                await pipeline().execute()
            except NoScriptError:  # Redis restarted or its scripts were flushed
                await redis.script_load(_STORE_IF_CURRENT)
                await pipeline().execute()

        try:
            await self._redis("set", send())
        except _RedisUnavailable:
            pass

    async def _redis_store(
        self, key: str, generation_key: str, value: bytes, generation: str, ttl: float
    ) -> None:
        if not self._redis_usable():
            return
        try:
            await self._redis(
                "set",
                self._store_script(
                    keys=[key, generation_key],
                    args=[value, generation, max(1, math.ceil(ttl))],
                ),
            )
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

    def _count(self, namespace: str, result: str, lookups: int = 1) -> None:
        counter = self._counters.get((namespace, result))
        if counter is None:
            counter = metrics.CACHE_LOOKUPS.labels(namespace, result)
            self._counters[(namespace, result)] = counter
        counter.inc(lookups)
