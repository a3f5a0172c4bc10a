"""``server._native.RateLimiter`` (GCRA) against the plain-Python reference."""

from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server._native import RateLimiter, RateLimitError

from . import reference_ratelimit as ref

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

configs = st.tuples(
    st.integers(min_value=1, max_value=50),  # limit
    st.sampled_from([0.001, 0.25, 1.0, 1.5, 3.0, 60.0, 3600.0])
    | st.floats(min_value=0.001, max_value=1000.0),  # period
    st.none() | st.integers(min_value=1, max_value=60),  # burst
)
steps = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "ключ"]),
        st.integers(min_value=0, max_value=70),  # cost
        st.one_of(
            st.just(0.0),
            st.floats(min_value=0.0, max_value=5.0),
            st.sampled_from([0.001, 0.01, 0.1, 1.0, 1e-9]),
        ),  # clock advance
    ),
    max_size=60,
)


@PROPS
@given(config=configs, start=st.floats(min_value=0.0, max_value=1e7), steps=steps)
def test_agrees_with_reference(
    config: tuple[int, float, int | None], start: float, steps: list[tuple[str, int, float]]
) -> None:
    limit, period, burst = config
    ours = RateLimiter(limit, period, burst=burst)
    theirs = ref.RateLimiter(limit, period, burst=burst)
    now = start
    for key, cost, dt in steps:
        now += dt
        got = ours.check(key, cost, now)
        want = theirs.check(key, cost, now)
        assert got == want, (key, cost, now)
        allowed, remaining, reset_after, retry_after = got
        assert 0 <= remaining <= (burst or limit)
        assert reset_after >= 0.0
        assert (retry_after == 0.0) if allowed else (retry_after > 0.0)


@PROPS
@given(config=configs, steps=st.lists(st.floats(min_value=0.0, max_value=0.3), max_size=150))
def test_never_exceeds_limit_plus_burst_in_a_period(
    config: tuple[int, float, int | None], steps: list[float]
) -> None:
    limit, period, burst = config
    b = burst or limit
    rl = RateLimiter(limit, period, burst=burst)
    now = 100.0
    admitted: list[float] = []
    for dt in steps:
        now += dt * period
        if rl.check("k", 1, now)[0]:
            admitted.append(now)
    # Any window of one period holds at most burst + limit admissions
    # (+1 for nanosecond flooring of the injected clock).
    j = 0
    for i, t in enumerate(admitted):
        while admitted[j] < t - period:
            j += 1
        assert i - j + 1 <= b + limit + 1


def test_fresh_key_spends_exactly_burst_then_refills() -> None:
    rl = RateLimiter(10, 1.0)
    for i in range(10):
        assert rl.check("k", 1, 50.0) == (True, 9 - i, pytest.approx(0.1 * (i + 1)), 0.0)
    allowed, remaining, reset_after, retry_after = rl.check("k", 1, 50.0)
    assert (allowed, remaining) == (False, 0)
    assert retry_after == pytest.approx(0.1)
    assert reset_after == pytest.approx(1.0)
    assert rl.check("k", 1, 50.1)[0] is True
    assert rl.check("k", 1, 50.1)[0] is False


def test_burst_differs_from_limit() -> None:
    rl = RateLimiter(1, 1.0, burst=5)
    assert rl.burst == 5 and rl.limit == 1 and rl.period_seconds == 1.0
    assert rl.check("k", 5, 0.0)[0] is True
    assert rl.check("k", 1, 0.5)[0] is False
    assert rl.check("k", 1, 1.0)[0] is True


def test_cost_above_burst_is_never_allowed() -> None:
    rl = RateLimiter(5, 1.0)
    allowed, remaining, _, retry_after = rl.check("k", 6, 0.0)
    assert allowed is False and remaining == 5 and math.isinf(retry_after)
    assert len(rl) == 0


def test_cost_zero_queries_without_spending() -> None:
    rl = RateLimiter(5, 1.0)
    assert rl.check("k", 0, 1.0) == (True, 5, 0.0, 0.0)
    rl.check("k", 2, 1.0)
    assert rl.check("k", 0, 1.0)[1] == 3


def test_keys_are_independent() -> None:
    rl = RateLimiter(1, 60.0)
    assert rl.check("a", now=1.0)[0] and rl.check("b", now=1.0)[0]
    assert not rl.check("a", now=1.0)[0]


def test_default_clock_is_time_monotonic() -> None:
    rl = RateLimiter(2, 3600.0)
    assert rl.check("k", 2, time.monotonic())[0] is True
    allowed, _, reset_after, retry_after = rl.check("k")
    assert allowed is False
    assert 0 < retry_after <= 1800.0 and reset_after <= 7200.0


def test_memory_is_bounded() -> None:
    rl = RateLimiter(1, 3600.0, max_keys=100)
    assert rl.max_keys <= 100
    for i in range(10_000):
        rl.check(f"user:{i}", now=float(i))
    assert 0 < len(rl) <= 100
    rl.clear()
    assert len(rl) == 0


def test_idle_keys_are_evicted_first() -> None:
    rl = RateLimiter(1, 1.0, max_keys=1)
    assert rl.check("a", now=0.0)[0]
    assert rl.check("b", now=10.0)[0]  # "a" is idle: dropped
    assert len(rl) == 1
    assert not rl.check("b", now=10.0)[0]  # "b" kept its state


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0, 1.0), {}),
        ((-1, 1.0), {}),
        ((1, 0.0), {}),
        ((1, -1.0), {}),
        ((1, math.nan), {}),
        ((1, math.inf), {}),
        ((1, 1.0), {"burst": 0}),
        ((1, 1.0), {"max_keys": 0}),
        ((2**40, 1.0), {}),
    ],
)
def test_bad_configuration(args: tuple[int, float], kwargs: dict[str, int]) -> None:
    with pytest.raises(RateLimitError):
        RateLimiter(*args, **kwargs)


@pytest.mark.parametrize(
    ("cost", "now"), [(-1, 1.0), (1, -1.0), (1, math.nan), (1, math.inf), (1, 1e300)]
)
def test_bad_check_arguments(cost: int, now: float) -> None:
    rl = RateLimiter(1, 1.0)
    with pytest.raises(RateLimitError):
        rl.check("k", cost, now)
    assert issubclass(RateLimitError, ValueError)


def test_threads_hammering_one_key_never_exceed_allowance() -> None:
    limit, period, burst = 200, 1.0, 20
    rl = RateLimiter(limit, period, burst=burst)
    admitted = 0
    lock = threading.Lock()
    start = time.monotonic()

    def hammer() -> None:
        nonlocal admitted
        mine = 0
        for _ in range(20_000):
            if rl.check("hot")[0]:
                mine += 1
        with lock:
            admitted += mine

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    bound = burst + math.floor(elapsed * limit / period) + 1
    assert burst <= admitted <= bound, (admitted, bound, elapsed)


def test_threads_with_injected_clock_admit_exactly_the_allowance() -> None:
    rl = RateLimiter(10, 1.0, burst=5)
    admitted = 0
    lock = threading.Lock()

    def hammer() -> None:
        nonlocal admitted
        mine = 0
        for i in range(2000):
            # Every thread walks the same clock: 0..1.999 s in 1 ms steps.
            if rl.check("hot", 1, i / 1000)[0]:
                mine += 1
        with lock:
            admitted += mine

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Over 2 s: the burst (5) plus one unit every 100 ms (19 more by 1.999 s).
    assert admitted <= 5 + 20
