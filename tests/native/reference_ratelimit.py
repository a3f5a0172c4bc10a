"""Executable specification of the keyed GCRA limiter, in plain Python.

``server._native.RateLimiter`` must agree with :class:`RateLimiter` here on
every sequence of checks with an injected clock (``test_ratelimit.py``).

GCRA ("generic cell rate algorithm", as in redis-cell and governor):

* emission interval ``T = period / limit``: one unit comes back every ``T``;
* a key may run ``burst`` units ahead: a fresh key can spend exactly
  ``burst`` units at once; over any window ``W`` at most
  ``burst + floor(W / T)`` units are admitted;
* per key we keep the theoretical arrival time ``tat``. A check of ``cost``
  at ``now``: ``tat = max(tat, now)``, ``new = tat + cost*T``; it is allowed
  iff ``new - burst*T <= now``, and then ``tat := new``.

To be exact, time is kept in integers: nanoseconds multiplied by ``limit``
(then ``T`` is exactly ``period_ns`` units). Float seconds become
``floor(now * 1e9)`` ns; the period ``floor(period * 1e9 + 0.5)`` ns.
"""

from __future__ import annotations

import math

MAX_UNITS = 2**32 - 1
MAX_NANOS = 2**63 - 1


class ReferenceRateLimitError(ValueError):
    pass


def seconds_to_nanos(seconds: float) -> int:
    ns = math.floor(seconds * 1e9) if math.isfinite(seconds) else -1
    if not 0 <= ns < MAX_NANOS:
        raise ReferenceRateLimitError("now must be finite and >= 0")
    return ns


class RateLimiter:
    """Unbounded (no eviction): the memory bound is tested separately."""

    def __init__(self, limit: int, period_seconds: float, *, burst: int | None = None) -> None:
        if not 1 <= limit <= MAX_UNITS:
            raise ReferenceRateLimitError("limit")
        burst = limit if burst is None else burst
        if not 1 <= burst <= MAX_UNITS:
            raise ReferenceRateLimitError("burst")
        period_ns = math.floor(period_seconds * 1e9 + 0.5) if math.isfinite(period_seconds) else 0
        if not 1 <= period_ns < MAX_NANOS:
            raise ReferenceRateLimitError("period")
        self.limit = limit
        self.burst = burst
        self.interval = period_ns  # T, in units of 1/limit ns
        self.burst_offset = burst * period_ns
        self.tats: dict[str, int] = {}

    def _seconds(self, units: int) -> float:
        return max(units, 0) / (self.limit * 1e9)

    def _remaining(self, tat: int, now: int) -> int:
        return min(max((self.burst_offset - (tat - now)) // self.interval, 0), self.burst)

    def check(self, key: str, cost: int = 1, now: float = 0.0) -> tuple[bool, int, float, float]:
        """Returns (allowed, remaining, reset_after, retry_after)."""
        if cost < 0:
            raise ReferenceRateLimitError("cost")
        t = seconds_to_nanos(now) * self.limit
        tat = max(self.tats.get(key, t), t)
        if cost > self.burst:
            return False, self._remaining(tat, t), self._seconds(tat - t), math.inf
        new_tat = tat + cost * self.interval
        allow_at = new_tat - self.burst_offset
        if t < allow_at:
            return (
                False,
                self._remaining(tat, t),
                self._seconds(tat - t),
                self._seconds(allow_at - t),
            )
        if cost > 0:
            self.tats[key] = new_tat
        return True, self._remaining(new_tat, t), self._seconds(new_tat - t), 0.0
