"""Load and bookkeeping for the fault tests (test_chaos_*.py, `make chaos`).

`Load` runs shoppers against a gateway while a test breaks something underneath it: each
shopper loops over product reads, list pages and, when given a user, checkouts of a one-line
cart with an Idempotency-Key. Every answer is recorded with its time, so a test can judge the
window before, during and after a fault.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from tests.conftest import ApiClient
from tests.orders_support import fill_cart


@dataclass(frozen=True, slots=True)
class Outcome:
    at: float  # monotonic seconds
    kind: str  # "read" or "checkout"
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    body: bytes = b""
    key: str = ""  # the checkout's Idempotency-Key


@dataclass(frozen=True, slots=True)
class Shopper:
    user_id: int
    token: str


@dataclass
class Load:
    api: ApiClient
    pool: asyncpg.Pool
    product_ids: Sequence[int]
    shoppers: Sequence[Shopper] = ()
    readers: int = 8
    checkout_pause: float = 0.05
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _keys: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._read_loop(n)) for n in range(self.readers)]
        self._tasks += [asyncio.create_task(self._checkout_loop(s)) for s in self.shoppers]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _read_loop(self, n: int) -> None:
        rng = random.Random(n)
        while not self._stop.is_set():
            draw = rng.random()
            if draw < 0.75:
                path = f"/api/v1/products/{rng.choice(self.product_ids)}"
            elif draw < 0.95:
                path = f"/api/v1/products?limit=5&sort={rng.choice(['price', '-created'])}"
            else:  # a search no cache holds: it always needs the database
                path = f"/api/v1/products?limit=5&q=chaos{rng.randrange(10**9)}"
            self.outcomes.append(await self._call("read", "GET", path))

    async def _checkout_loop(self, shopper: Shopper) -> None:
        rng = random.Random(shopper.user_id)
        while not self._stop.is_set():
            try:
                await fill_cart(self.pool, shopper.user_id, {rng.choice(self.product_ids): 1})
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(0.1)  # the test's own database access is down too
                continue
            key = f"chaos-{shopper.user_id}-{next(self._keys)}"
            self.outcomes.append(
                await self._call(
                    "checkout",
                    "POST",
                    "/api/v1/orders",
                    json={},
                    token=shopper.token,
                    headers={"Idempotency-Key": key},
                    key=key,
                )
            )
            await asyncio.sleep(self.checkout_pause)

    async def _call(
        self, kind: str, method: str, path: str, key: str = "", **kwargs: object
    ) -> Outcome:
        try:
            response = await self.api.request(method, path, timeout=10.0, **kwargs)  # type: ignore[arg-type]
        except Exception:  # no HTTP answer at all: refused, reset or timed out
            await asyncio.sleep(0.02)
            return Outcome(time.monotonic(), kind, 0, b"", key)
        return Outcome(time.monotonic(), kind, response.status, response.body, key)

    def between(self, start: float, end: float, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.at < end and o.kind == kind]


def share_2xx(outcomes: Sequence[Outcome]) -> float:
    assert outcomes, "no requests were made in this window"
    return sum(200 <= o.status < 300 for o in outcomes) / len(outcomes)


def statuses(outcomes: Sequence[Outcome]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts
