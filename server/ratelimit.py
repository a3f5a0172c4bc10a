"""Request budgets: anonymous callers per client IP, users per id, logins per IP and e-mail.

The algorithm everywhere is GCRA (as in redis-cell): a key may spend its whole budget at once,
then one unit comes back every `period / limit`. Without Redis the budgets live in the Rust
limiter of this process. With `REDIS_URL` they live in Redis, checked and spent by ONE Lua script
(atomic, on Redis' clock), so every gateway process behind the load balancer shares one budget;
the checks asked in one turn of the event loop travel as one pipeline (a round trip per request
was half of a cached read's CPU).

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

# KEYS[1] holds the key's theoretical arrival time (TAT) in microseconds of Redis' clock.
# ARGV: emission interval T (microseconds, may be fractional), burst, cost.
# Returns {allowed, remaining, reset_after_us, retry_after_us}.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local burst_offset = burst * interval
local function remaining(at)
  local left = math.floor((burst_offset - (at - now)) / interval)
  if left < 0 then return 0 end
  if left > burst then return burst end
  return left
end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst_offset
if now < allow_at then
  return {0, remaining(tat), math.ceil(tat - now), math.ceil(allow_at - now)}
end
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, remaining(new_tat), math.ceil(new_tat - now), 0}
"""


class _ScriptBatch:
    """GCRA checks asked for in one turn of the event loop, sent to Redis as one pipeline: one
    round trip for all of them, each still its own atomic script run on Redis' clock. (One
    EVALSHA round trip costs 55-84 us of this process's CPU; in a batch 20-40 us a check.)"""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._sha: str = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `_waiting` belongs to
        self._tasks: set[asyncio.Task[None]] = set()  # flushes in flight (the loop holds weakly)
        self.pipelines_sent = 0

    def run(self, *args: Any) -> asyncio.Future[Any]:
        """EVALSHA of the script with `args` (numkeys, key, ARGV...), in the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._waiting or self._loop is not loop:
            # The first check of this turn (or of a new loop: a batch left by a closed one
            # would never be sent) schedules the send for the end of the turn.
            self._waiting, self._loop = [], loop
            loop.call_soon(self._flush)
        self._waiting.append((args, future))
        return future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                try:
                    replies = await self._pipeline(batch)
                except NoScriptError:  # Redis restarted or its scripts were flushed
                    await self._redis.script_load(GCRA_SCRIPT)
                    replies = await self._pipeline(batch)
        except asyncio.CancelledError:  # the process is stopping
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # each check falls back as a failed call of its own would
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():  # its request may have gone away meanwhile
                future.set_result(reply)

    async def _pipeline(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> Any:
        pipe = self._redis.pipeline(transaction=False)
        for args, _ in batch:
            pipe.evalsha(self._sha, *args)
        self.pipelines_sent += 1
        return await pipe.execute()


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
        # The batch's pipeline carries the timeout (_REDIS_TIMEOUT) for all of its checks.
        allowed, remaining, reset_us, retry_us = await self._script.run(
            1, f"{_KEY_PREFIX}{scope.value}:{digest}", repr(interval_us), rate.limit, 1
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
