"""The request limiter: local GCRA, the Redis Lua GCRA, their agreement, and failing over."""

from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from server.config import Settings, load_settings
from server.domain.errors import Unavailable
from server.ratelimit import Decision, RequestLimiter, Scope, client_address
from tests.conftest import BASE_ENV, free_port

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def settings(**env: str) -> Settings:
    return load_settings(
        {
            **BASE_ENV,
            "DATABASE_URL": "postgresql://unused/x",
            "RATE_LIMIT_ANON": "5/minute",
            "RATE_LIMIT_LOGIN": "2/minute",
            **env,
        }
    )


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def spend(limiter: RequestLimiter, scope: Scope, key: str, times: int) -> list[Decision]:
    return [await limiter.check(scope, key) for _ in range(times)]


async def test_the_local_budget_counts_down_and_refuses() -> None:
    limiter = RequestLimiter(settings())
    decisions = await spend(limiter, Scope.ANON, "1.2.3.4", 6)

    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    assert 11 < refused.retry_after <= 12  # one unit comes back every 60/5 s
    assert refused.headers()["Retry-After"] == "12"
    assert refused.headers()["RateLimit-Limit"] == "5"
    assert "Retry-After" not in decisions[0].headers()
    assert (await limiter.check(Scope.ANON, "5.6.7.8")).allowed


async def test_the_redis_budget_behaves_like_the_local_one(redis: Redis) -> None:
    local = RequestLimiter(settings())
    shared = RequestLimiter(settings(), redis)
    assert shared.shared and not local.shared
    key = f"agree-{uuid.uuid4().hex}"

    for a, b in zip(
        await spend(local, Scope.ANON, key, 7), await spend(shared, Scope.ANON, key, 7), strict=True
    ):
        assert (a.allowed, a.remaining, a.limit) == (b.allowed, b.remaining, b.limit)
        assert a.reset_after == pytest.approx(b.reset_after, abs=0.5)
        assert a.retry_after == pytest.approx(b.retry_after, abs=0.5)


async def test_the_redis_budget_is_shared_and_expires(redis: Redis) -> None:
    one, other = RequestLimiter(settings(), redis), RequestLimiter(settings(), redis)
    key = f"shared-{uuid.uuid4().hex}"
    assert [d.allowed for d in await spend(one, Scope.LOGIN, key, 1)] == [True]
    assert [d.allowed for d in await spend(other, Scope.LOGIN, key, 2)] == [True, False]
    stored = [k async for k in redis.scan_iter(match="sf:rl:login:*")]
    assert stored and 0 < await redis.pttl(stored[0]) <= 60_000
    assert key.encode() not in b"".join(stored)  # keys are digests: no e-mails in Redis


async def test_one_unit_comes_back_after_the_emission_interval(redis: Redis) -> None:
    fast = settings(RATE_LIMIT_ANON="10/second")
    for limiter in (RequestLimiter(fast), RequestLimiter(fast, redis)):
        key = f"refill-{uuid.uuid4().hex}"
        assert all(d.allowed for d in await spend(limiter, Scope.ANON, key, 10))
        assert not (await limiter.check(Scope.ANON, key)).allowed
        await asyncio.sleep(0.15)
        assert (await limiter.check(Scope.ANON, key)).allowed


async def test_concurrent_redis_checks_share_round_trips_and_stay_exact(redis: Redis) -> None:
    """Checks asked in one turn of the loop go as one script run; each still spends its unit
    atomically, so 40 racing requests of one key get exactly the budget of 5."""
    limiter = RequestLimiter(settings(), redis)
    key = f"batch-{uuid.uuid4().hex}"
    decisions = await asyncio.gather(*(limiter.check(Scope.ANON, key) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 5
    assert sorted(d.remaining for d in decisions if d.allowed) == [0, 1, 2, 3, 4]
    assert limiter._script is not None and limiter._script.round_trips == 1
    # Other keys in the same batch keep budgets of their own.
    others = await asyncio.gather(
        *(limiter.check(Scope.ANON, f"{key}-{n}") for n in range(10)),
        *(limiter.check(Scope.USER, key) for _ in range(3)),
    )
    assert all(d.allowed for d in others)
    assert limiter._script.round_trips == 2
    # Each check was priced at its own scope's rate, in the run they shared.
    user_limit = limiter.rates[Scope.USER].limit
    assert user_limit != 5
    assert [d.remaining for d in others[:10]] == [4] * 10
    assert [(d.limit, d.remaining) for d in others[10:]] == [
        (user_limit, user_limit - n) for n in (1, 2, 3)
    ]
    anon_interval = 60 / 5
    user_interval = limiter.rates[Scope.USER].period / user_limit
    assert all(d.reset_after == pytest.approx(anon_interval, abs=0.1) for d in others[:10])
    for n, decision in enumerate(others[10:], start=1):
        assert decision.reset_after == pytest.approx(n * user_interval, abs=0.1)


async def test_a_burst_beyond_one_script_run_is_still_one_round_trip_and_exact(
    redis: Redis,
) -> None:
    """More checks in one turn than one run takes (128) go as several runs in one pipeline:
    one round trip, and 300 racing requests of one key still get exactly the budget of 5."""
    limiter = RequestLimiter(settings(), redis)
    key = f"burst-{uuid.uuid4().hex}"
    decisions = await asyncio.gather(*(limiter.check(Scope.ANON, key) for _ in range(300)))
    assert sum(d.allowed for d in decisions) == 5
    assert [d.allowed for d in decisions[:5]] == [True] * 5  # spent in the order asked
    assert limiter._script is not None and limiter._script.round_trips == 1


async def test_the_script_is_loaded_again_after_redis_forgets_it(redis: Redis) -> None:
    limiter = RequestLimiter(settings(), redis)
    key = f"flushed-{uuid.uuid4().hex}"
    assert (await limiter.check(Scope.ANON, key)).allowed
    await redis.script_flush()
    decisions = await asyncio.gather(*(limiter.check(Scope.ANON, key) for _ in range(5)))
    assert [d.allowed for d in decisions].count(True) == 4  # one unit was spent before
    assert limiter._redis_retry_at == 0.0  # Redis kept answering: no fall back to local budgets


async def test_without_redis_general_budgets_go_local_and_logins_fail_closed() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    limiter = RequestLimiter(settings(), dead)
    try:
        started = time.perf_counter()
        decisions = await spend(limiter, Scope.ANON, "9.9.9.9", 6)
        assert [d.allowed for d in decisions] == [True] * 5 + [False]
        with pytest.raises(Unavailable) as raised:
            await limiter.check(Scope.LOGIN, "9.9.9.9|a@b.c")
        assert raised.value.retry_after >= 1
        assert time.perf_counter() - started < 2.0
    finally:
        await dead.aclose()


async def test_a_batch_to_a_redis_that_never_answers_falls_back_after_its_timeout() -> None:
    """A Redis that accepts and then says nothing: the batch's timeout (0.5 s) sends every
    check of it to the local budgets; logins fail closed."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # takes every command, answers none
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mute = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    limiter = RequestLimiter(settings(), mute)
    try:
        started = time.perf_counter()
        decisions = await asyncio.gather(*(limiter.check(Scope.ANON, "7.7.7.7") for _ in range(8)))
        assert sorted(d.allowed for d in decisions) == [False] * 3 + [True] * 5  # local: 5/min
        assert time.perf_counter() - started < 1.5  # the batch gave up after its timeout
        with pytest.raises(Unavailable):
            await limiter.check(Scope.LOGIN, "7.7.7.7|a@b.c")
    finally:
        await mute.aclose()
        server.close()


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        ("203.0.113.9", "1.1.1.1", "203.0.113.9"),  # untrusted peer: the header is ignored
        ("10.0.0.1", "", "10.0.0.1"),  # trusted peer, nothing forwarded
        ("10.0.0.1", "1.1.1.1", "1.1.1.1"),
        ("10.0.0.1", "6.6.6.6, 1.1.1.1", "1.1.1.1"),  # the client wrote 6.6.6.6 itself
        ("10.0.0.1", "1.1.1.1, 10.0.0.2", "1.1.1.1"),  # two proxies of ours
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # all trusted: the farthest
        ("10.0.0.1", "1.1.1.1, bogus", "10.0.0.1"),  # garbage after the client: stop at the peer
        ("::1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_address_is_the_rightmost_untrusted_hop(
    peer: str, forwarded: str, expected: str
) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("10.0.0.1", "1.1.1.1", ()) == "10.0.0.1"
