"""Hypothesis strategies for carts, shared by the pricing tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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
promotion_st = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"kind": st.just("percent"), "value": st.integers(min_value=1, max_value=100)},
        optional={
            "min_subtotal": st.integers(min_value=0, max_value=500_000),
            "product_ids": scope_list,
            "category_ids": scope_list,
        },
    ),
    st.fixed_dictionaries(
        {"kind": st.just("fixed"), "value": st.integers(min_value=1, max_value=3_000_000)},
        optional={
            "min_subtotal": st.integers(min_value=0, max_value=500_000),
            "product_ids": scope_list,
            "category_ids": scope_list,
        },
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("buy_x_get_y"),
            "buy_quantity": st.integers(min_value=1, max_value=5),
            "get_quantity": st.integers(min_value=1, max_value=3),
        },
        optional={
            "value": st.integers(min_value=0, max_value=5),
            "min_subtotal": st.integers(min_value=0, max_value=500_000),
            "product_ids": scope_list,
            "category_ids": scope_list,
        },
    ),
)
currency_st = st.sampled_from(sorted(ref.CURRENCY_EXPONENTS))
tax_st = st.integers(min_value=0, max_value=ref.MAX_TAX_RATE_BPS)

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
