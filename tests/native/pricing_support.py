"""What the pricing tests share: hypothesis strategies for carts, and the check that the Rust
engine and the reference agree (equal results, or both refuse)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from server._native import PricingError

from . import reference_pricing as ref

ids = st.integers(min_value=0, max_value=12)
lines_st = st.lists(
    st.fixed_dictionaries(
        {
            "product_id": ids,
            "category_id": st.none() | st.integers(min_value=0, max_value=4),
            "unit_price": st.integers(min_value=0, max_value=200_000),
            "quantity": st.integers(min_value=1, max_value=40),
        }
    ),
    max_size=12,
)
scope_list = st.none() | st.lists(ids, max_size=4)
# The optional fields every promotion kind may carry: its minimum and its scope.
gate_and_scope = {
    "min_subtotal": st.integers(min_value=0, max_value=500_000),
    "product_ids": scope_list,
    "category_ids": scope_list,
}
promotion_st = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"kind": st.just("percent"), "value": st.integers(min_value=1, max_value=100)},
        optional=gate_and_scope,
    ),
    st.fixed_dictionaries(
        {"kind": st.just("fixed"), "value": st.integers(min_value=1, max_value=3_000_000)},
        optional=gate_and_scope,
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("buy_x_get_y"),
            "buy_quantity": st.integers(min_value=1, max_value=5),
            "get_quantity": st.integers(min_value=1, max_value=3),
        },
        optional={"value": st.integers(min_value=0, max_value=5), **gate_and_scope},
    ),
)
currency_st = st.sampled_from(sorted(ref.CURRENCY_EXPONENTS))
tax_st = st.integers(min_value=0, max_value=ref.MAX_TAX_RATE_BPS)

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcomes(
    ours: Callable[..., Any], theirs: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Any, Any]:
    """(the Rust result or its PricingError, the reference result or its error)."""
    try:
        mine: Any = ours(*args, **kwargs)
    except PricingError as e:
        mine = e
    try:
        spec: Any = theirs(*args, **kwargs)
    except ref.ReferencePricingError as e:
        spec = e
    return mine, spec


def agree(ours: Callable[..., Any], theirs: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Assert both give the same result or both refuse; the Rust outcome."""
    mine, spec = outcomes(ours, theirs, *args, **kwargs)
    if isinstance(spec, Exception):
        assert isinstance(mine, PricingError), (mine, spec)
    else:
        assert mine == spec
    return mine
