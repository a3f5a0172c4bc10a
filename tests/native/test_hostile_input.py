"""No input crosses from Python into the Rust core and comes back as a panic.

pyo3 turns a Rust panic into `pyo3_runtime.PanicException`, a BaseException that no
`except Exception` in the gateway would catch. Hypothesis feeds the Python entry points arbitrary
objects (wrong types, nested junk, huge and negative integers, odd strings and bytes); every call
must return or raise one of the documented exceptions. The Rust-side volume run is
native/tests/fuzz_*.rs (`make fuzz`).
"""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.strategies as st

from server import _native

# OverflowError: pyo3 refuses a Python int that does not fit the Rust integer it converts to.
ALLOWED = (
    _native.PricingError,
    _native.JwtError,
    _native.RateLimitError,
    TypeError,
    ValueError,
    OverflowError,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner, inner, inner),
        st.dictionaries(st.text(max_size=12), inner, max_size=5),
    ),
    max_leaves=12,
)
line_keys = st.sampled_from(["product_id", "category_id", "unit_price", "quantity", "extra"])
lines = st.lists(st.dictionaries(line_keys, junk, max_size=5), max_size=5)
promotion_keys = st.sampled_from(
    ["kind", "value", "buy_quantity", "get_quantity", "min_subtotal", "product_ids", "category_ids"]
)
promotions = st.one_of(
    st.none(),
    junk,
    st.dictionaries(promotion_keys, st.one_of(junk, st.sampled_from(["percent", "fixed"]))),
)
rows = st.lists(
    st.one_of(junk, st.tuples(st.integers(), st.none() | st.integers(), junk, st.integers())),
    max_size=5,
)
SETTINGS = hypothesis.settings(max_examples=400, deadline=None, database=None)


def call(function: Any, *args: Any, **kwargs: Any) -> None:
    try:
        function(*args, **kwargs)
    except ALLOWED:
        pass  # a refusal is fine; a PanicException (BaseException) fails the test


@SETTINGS
@hypothesis.given(
    lines=st.one_of(lines, junk),
    promotion=promotions,
    tax=st.one_of(st.integers(), junk),
    currency=st.one_of(st.text(max_size=4), junk),
)
def test_price_cart_never_panics(lines: Any, promotion: Any, tax: Any, currency: Any) -> None:
    call(_native.price_cart, lines, promotion=promotion, tax_rate_bps=tax, currency=currency)


@SETTINGS
@hypothesis.given(rows=st.one_of(rows, junk), promotion=promotions, tax=st.integers())
def test_price_cart_rows_never_panics(rows: Any, promotion: Any, tax: int) -> None:
    call(_native.price_cart_rows, rows, promotion=promotion, tax_rate_bps=tax)


VERIFIER = _native.JwtVerifier(b"k" * 32, "HS256")


@SETTINGS
@hypothesis.given(
    token=st.one_of(st.binary(max_size=300), st.text(max_size=300), junk),
    typ=st.one_of(st.none(), st.text(max_size=5), junk),
    now=st.one_of(st.none(), st.integers(), junk),
)
def test_jwt_verify_never_panics(token: Any, typ: Any, now: Any) -> None:
    call(VERIFIER.verify, token, typ=typ, now=now)


@SETTINGS
@hypothesis.given(
    claims=st.one_of(st.dictionaries(st.text(max_size=6), junk, max_size=5), junk),
    key=st.one_of(st.binary(max_size=40), st.text(max_size=40), junk),
    algorithm=st.one_of(st.sampled_from(["HS256", "RS256", "EdDSA", "none"]), junk),
    headers=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), junk, max_size=3), junk),
)
def test_jwt_encode_and_key_parsing_never_panic(
    claims: Any, key: Any, algorithm: Any, headers: Any
) -> None:
    call(_native.jwt_encode, claims, key, algorithm, headers)
    call(_native.JwtVerifier, key, algorithm, leeway=0)


@SETTINGS
@hypothesis.given(
    limit=st.one_of(st.integers(), junk),
    period=st.one_of(st.floats(allow_nan=True), junk),
    burst=st.one_of(st.none(), st.integers(), junk),
    key=st.one_of(st.text(max_size=5), junk),
    cost=st.one_of(st.integers(), junk),
    now=st.one_of(st.none(), st.floats(allow_nan=True), junk),
)
def test_rate_limiter_never_panics(
    limit: Any, period: Any, burst: Any, key: Any, cost: Any, now: Any
) -> None:
    try:
        limiter = _native.RateLimiter(limit, period, burst=burst, max_keys=64)
    except ALLOWED:
        return
    call(limiter.check, key, cost, now)
