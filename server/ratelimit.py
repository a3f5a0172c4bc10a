"""Request budgets: anonymous callers per client IP, users per id, logins per IP and e-mail.

The algorithm everywhere is GCRA (as in redis-cell): a key may spend its whole budget at once,
then one unit comes back every `period / limit`. Without Redis the budgets live in the Rust
limiter of this process. With `REDIS_URL` they live in Redis, checked and spent by ONE Lua script
(atomic, on Redis' clock), so every gateway process behind the load balancer shares one budget;
the checks asked in one turn of the event loop travel as one script run over all their keys (a
round trip per request was half of a cached read's CPU). A run touches keys of any hash slot: the
shared Redis is one server, not Redis Cluster (the cache's MGETs need that too).

When Redis does not answer, the general budgets fall back to this process's limiter (a little
more generous across many processes, never unlimited) while logins fail closed with 503:
the login budget is what stops password guessing, so it is never waived.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from server.config import Rate, Settings
from server.domain.errors import Unavailable
from server.metrics import RATELIMIT_DECISIONS
from server.native import RateLimiter

log = logging.getLogger(__name__)

# Redis gets this long to answer before the check falls back; after a failure it is left alone
# for `_REDIS_COOLDOWN` seconds so a dead Redis costs one timeout, not one per request.
_REDIS_TIMEOUT = 0.5
_REDIS_COOLDOWN = 1.0
_KEY_PREFIX = "sf:rl:"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Every KEYS[i] holds a key's theoretical arrival time (TAT) in microseconds of Redis' clock;
# ARGV holds three values per key: emission interval T (microseconds, may be fractional), burst,
# cost. The keys are checked in order (a key given twice spends twice), all at one reading of
# the clock. Returns four values per key: allowed, remaining, reset_after_us, retry_after_us.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function remaining(at, interval, burst)
  local left = math.floor((burst * interval - (at - now)) / interval)
  if left < 0 then return 0 end
  if left > burst then return burst end
  return left
end
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst * interval
  local n = #out
  if now < allow_at then
    out[n + 1], out[n + 2] = 0, remaining(tat, interval, burst)
    out[n + 3], out[n + 4] = math.ceil(tat - now), math.ceil(allow_at - now)
  else
    local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
    redis.call('SET', key, string.format('%.0f', new_tat), 'PX', ttl_ms)
    out[n + 1], out[n + 2] = 1, remaining(new_tat, interval, burst)
    out[n + 3], out[n + 4] = math.ceil(new_tat - now), 0
  end
end
return out
"""

# Keys per script run: Redis runs nothing else during a script, so a burst of thousands of
# checks in one turn goes as several runs (still one round trip) rather than one long one.
_KEYS_PER_RUN = 128

_Check = tuple[str, tuple[Any, ...]]  # (key, its ARGV triple)


class _ScriptBatch:
    """GCRA checks asked for in one turn of the event loop, sent to Redis in one round trip as
    one script run over all their keys: each check is still atomic, on Redis' clock. (A round
    trip per check cost 55-84 us of this process's CPU; a pipeline of one EVALSHA per check
    20-40 us a check; one run for the batch ~10 us less again, measured with batches of 4-16.)"""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._sha: str = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
        self._waiting: list[tuple[_Check, asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `_waiting` belongs to
        self._tasks: set[asyncio.Task[None]] = set()  # flushes in flight (the loop holds weakly)
        self.round_trips = 0

    def run(self, key: str, *argv: Any) -> asyncio.Future[Any]:
        """The script's four replies for `key` with its ARGV triple, from the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._waiting or self._loop is not loop:
            # The first check of this turn (or of a new loop: a batch left by a closed one
            # would never be sent) schedules the send for the end of the turn.
            self._waiting, self._loop = [], loop
            loop.call_soon(self._flush)
        self._waiting.append(((key, argv), future))
        return future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[_Check, asyncio.Future[Any]]]) -> None:
        checks = [check for check, _ in batch]
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                try:
                    replies = await self._runs(checks)
                except NoScriptError:  # Redis restarted or its scripts were flushed
                    await self._redis.script_load(GCRA_SCRIPT)
                    replies = await self._runs(checks)
        except asyncio.CancelledError:  # the process is stopping
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # each check falls back as a failed call of its own would
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for n, (_, future) in enumerate(batch):
            if not future.done():  # its request may have gone away meanwhile
                future.set_result(replies[4 * n : 4 * n + 4])

    async def _runs(self, checks: list[_Check]) -> list[Any]:
        """The replies of all `checks`, flat, four each, from one round trip."""
        runs = [checks[i : i + _KEYS_PER_RUN] for i in range(0, len(checks), _KEYS_PER_RUN)]
        self.round_trips += 1
        if len(runs) == 1:
            return list(await self._redis.evalsha(self._sha, *self._script_args(runs[0])))
        pipe = self._redis.pipeline(transaction=False)
        for run in runs:
            pipe.evalsha(self._sha, *self._script_args(run))
        return [reply for replies in await pipe.execute() for reply in replies]

    @staticmethod
    def _script_args(run: list[_Check]) -> list[Any]:
        return [len(run), *(key for key, _ in run), *(value for _, argv in run for value in argv)]


class Scope(StrEnum):
    ANON = "anon"
    USER = "user"
    LOGIN = "login"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the budget is full again
    retry_after: float  # seconds until a refused request would pass; 0 when allowed

    def headers(self) -> dict[str, str]:
        """`RateLimit-*` (IETF draft, delta seconds) and, when refused, `Retry-After`."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class RequestLimiter:
    """The three budgets of the gateway, local or shared through Redis."""

    def __init__(self, settings: Settings, redis: Any | None = None) -> None:
        self.enabled = settings.rate_limit_enabled
        self.rates: dict[Scope, Rate] = {
            Scope.ANON: settings.rate_limit_anon,
            Scope.USER: settings.rate_limit_user,
            Scope.LOGIN: settings.rate_limit_login,
        }
        self._local = {scope: RateLimiter(r.limit, r.period) for scope, r in self.rates.items()}
        self._redis = redis
        self._script = _ScriptBatch(redis) if redis is not None else None
        self._redis_retry_at = 0.0
        self._counters: dict[tuple[Scope, str], Any] = {}  # the metric's children, looked up once

    @property
    def shared(self) -> bool:
        """True when the budgets live in Redis (shared by every gateway process)."""
        return self._script is not None

    async def check(self, scope: Scope, key: str) -> Decision:
        """Spend one unit of `key`'s budget in `scope`; the decision says whether it was there.

        Raises `Unavailable` for the login scope when the shared store does not answer.
        """
        decision = await self._decide(scope, key)
        self.count(scope, decision)
        return decision

    def try_spend_local(self, scope: Scope, key: str) -> Decision | None:
        """`try_spend` without waiting, for budgets kept in this process; None when they are
        shared through Redis (the caller must await `try_spend`)."""
        if self._script is not None:
            return None
        decision = self._check_local(scope, key)
        if decision.allowed:
            self.count(scope, decision)
        return decision

    async def try_spend(self, scope: Scope, key: str) -> Decision:
        """`check`, except that a refusal is not counted: GCRA spends nothing on a refusal, and
        the caller answers it through the handler, which checks again and counts it then."""
        decision = await self._decide(scope, key)
        if decision.allowed:
            self.count(scope, decision)
        return decision

    def count(self, scope: Scope, decision: Decision) -> None:
        outcome = "allowed" if decision.allowed else "limited"
        counter = self._counters.get((scope, outcome))
        if counter is None:
            counter = RATELIMIT_DECISIONS.labels(scope.value, outcome)
            self._counters[scope, outcome] = counter
        counter.inc()

    async def _decide(self, scope: Scope, key: str) -> Decision:
        if self._script is not None and time.monotonic() >= self._redis_retry_at:
            try:
                return await self._check_shared(scope, key)
            except (RedisError, OSError, TimeoutError) as exc:
                self._redis_retry_at = time.monotonic() + _REDIS_COOLDOWN
                log.warning("rate limiting: Redis unavailable (%s); using local budgets", exc)
        if self._script is not None and scope is Scope.LOGIN:
            RATELIMIT_DECISIONS.labels(scope.value, "unavailable").inc()
            raise Unavailable("sign-in is briefly unavailable; try again shortly", retry_after=5)
        return self._check_local(scope, key)

    def _check_local(self, scope: Scope, key: str) -> Decision:
        allowed, remaining, reset_after, retry_after = self._local[scope].check(key)
        return Decision(allowed, self.rates[scope].limit, remaining, reset_after, retry_after)

    async def _check_shared(self, scope: Scope, key: str) -> Decision:
        assert self._script is not None
        rate = self.rates[scope]
        interval_us = rate.period * 1_000_000 / rate.limit
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        # The batch's round trip carries the timeout (_REDIS_TIMEOUT) for all of its checks.
        allowed, remaining, reset_us, retry_us = await self._script.run(
            f"{_KEY_PREFIX}{scope.value}:{digest}", repr(interval_us), rate.limit, 1
        )
        return Decision(bool(allowed), rate.limit, int(remaining), reset_us / 1e6, retry_us / 1e6)


def client_address(peer: str, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """The peer address; when the peer is a trusted proxy, the rightmost untrusted hop of
    `X-Forwarded-For` (everything left of it could have been written by the client)."""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    address = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_ip(hop):
            break  # not written by a proxy of ours: keep the last hop we can vouch for
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
