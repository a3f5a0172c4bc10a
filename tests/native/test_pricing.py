"""``server._native.price_cart`` against the plain-Python reference."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server._native import PricingError, price_cart

from . import reference_pricing as ref
from .pricing_support import (
    PROPS,
    agree,
    currency_st,
    ids,
    lines_st,
    outcomes,
    promotion_st,
    tax_st,
)

I64_MAX = 2**63 - 1


def line(pid: int, price: int, qty: int, cat: int | None = None) -> dict[str, Any]:
    return {"product_id": pid, "category_id": cat, "unit_price": price, "quantity": qty}


def discounts(result: dict[str, Any]) -> list[int]:
    return [entry["line_discount"] for entry in result["lines"]]


def both(lines: Any, **kwargs: Any) -> tuple[Any, Any]:
    return outcomes(price_cart, ref.price_cart, lines, **kwargs)


def assert_agree(lines: Any, **kwargs: Any) -> Any:
    return agree(price_cart, ref.price_cart, lines, **kwargs)


# ---------------------------------------------------------------------------
# agreement with the reference
# ---------------------------------------------------------------------------


@PROPS
@given(lines=lines_st, promotion=promotion_st, tax=tax_st, currency=currency_st)
def test_agrees_with_reference(
    lines: list[dict[str, Any]], promotion: dict[str, Any] | None, tax: int, currency: str
) -> None:
    assert_agree(lines, promotion=promotion, tax_rate_bps=tax, currency=currency)


big = st.integers(min_value=0, max_value=I64_MAX)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.fixed_dictionaries(
            {
                "product_id": ids,
                "category_id": st.none(),
                "unit_price": st.one_of(big, st.integers(min_value=2**40, max_value=2**62)),
                "quantity": st.integers(min_value=1, max_value=2**31),
            }
        ),
        max_size=4,
    ),
    promotion=promotion_st,
    tax=tax_st,
)
def test_overflow_agrees_with_reference(
    lines: list[dict[str, Any]], promotion: dict[str, Any] | None, tax: int
) -> None:
    assert_agree(lines, promotion=promotion, tax_rate_bps=tax)


@PROPS
@given(lines=lines_st, promotion=promotion_st, tax=tax_st, currency=currency_st)
def test_invariants(
    lines: list[dict[str, Any]], promotion: dict[str, Any] | None, tax: int, currency: str
) -> None:
    r = price_cart(lines, promotion=promotion, tax_rate_bps=tax, currency=currency)
    assert r["currency"] == currency
    assert r["exponent"] == ref.CURRENCY_EXPONENTS[currency]
    assert len(r["lines"]) == len(lines)
    for entry, src in zip(r["lines"], lines, strict=True):
        assert entry["product_id"] == src["product_id"]
        assert entry["line_subtotal"] == src["unit_price"] * src["quantity"]
        assert 0 <= entry["line_discount"] <= entry["line_subtotal"]
        assert entry["line_total"] == entry["line_subtotal"] - entry["line_discount"]
    assert r["subtotal"] == sum(e["line_subtotal"] for e in r["lines"])
    assert r["discount"] == sum(discounts(r))
    assert 0 <= r["discount"] <= r["subtotal"]
    assert r["tax"] >= 0
    assert r["total"] == r["subtotal"] - r["discount"] + r["tax"] >= 0
    assert r["promotion_applied"] == (r["discount"] > 0)
    if promotion is None or r["subtotal"] < promotion.get("min_subtotal", 0):
        assert r["discount"] == 0
    elif promotion["kind"] == "fixed":
        p = ref.Promotion.from_dict(promotion)
        in_scope = sum(
            e["line_subtotal"]
            for e, src in zip(r["lines"], lines, strict=True)
            if p.in_scope(src["product_id"], src["category_id"])
        )
        assert r["discount"] == min(promotion["value"], in_scope)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=0, max_value=10**12), d=st.integers(min_value=1, max_value=10**6))
def test_round_half_even_reference(n: int, d: int) -> None:
    from fractions import Fraction

    assert ref.round_half_even(n, d) == round(Fraction(n, d))


# ---------------------------------------------------------------------------
# worked examples
# ---------------------------------------------------------------------------


def test_no_promotion_with_tax() -> None:
    r = price_cart([line(1, 1999, 3, cat=1), line(2, 500, 1)], tax_rate_bps=825)
    assert (r["subtotal"], r["discount"], r["tax"], r["total"]) == (6497, 0, 536, 7033)
    assert r["promotion_applied"] is False
    assert (r["currency"], r["exponent"]) == ("USD", 2)


def test_percent_half_even() -> None:
    r = price_cart([line(1, 25, 1), line(2, 35, 1)], promotion={"kind": "percent", "value": 10})
    assert discounts(r) == [2, 4]  # 2.5 -> 2, 3.5 -> 4


def test_fixed_spread_remainder_to_largest_first_line() -> None:
    r = price_cart(
        [line(1, 1, 1), line(2, 3, 1), line(3, 3, 1)], promotion={"kind": "fixed", "value": 5}
    )
    assert discounts(r) == [0, 3, 2]


def test_fixed_remainder_spills_when_largest_line_is_full() -> None:
    r = price_cart(
        [line(1, 1, 1), line(2, 1, 1), line(3, 1, 1)], promotion={"kind": "fixed", "value": 2}
    )
    assert discounts(r) == [1, 1, 0]


def test_fixed_capped_at_scope_subtotal() -> None:
    r = price_cart(
        [line(1, 300, 1), line(2, 700, 1)],
        promotion={"kind": "fixed", "value": 10_000, "product_ids": [2]},
    )
    assert discounts(r) == [0, 700]
    assert r["total"] == 300


def test_buy_x_get_y() -> None:
    promo = {"kind": "buy_x_get_y", "buy_quantity": 2, "get_quantity": 1, "category_ids": [5]}
    r = price_cart([line(1, 100, 7, cat=5), line(2, 100, 7, cat=6)], promotion=promo)
    assert discounts(r) == [200, 0]


def test_min_subtotal_gate() -> None:
    promo = {"kind": "percent", "value": 50, "min_subtotal": 1000}
    assert price_cart([line(1, 999, 1)], promotion=promo)["promotion_applied"] is False
    r = price_cart([line(1, 1000, 1)], promotion=promo)
    assert (r["discount"], r["promotion_applied"]) == (500, True)


@pytest.mark.parametrize(("currency", "exponent"), [("JPY", 0), ("KRW", 0), ("KWD", 3), ("EUR", 2)])
def test_currency_exponents(currency: str, exponent: int) -> None:
    assert price_cart([], currency=currency)["exponent"] == exponent


def test_fifty_line_cart_matches_reference() -> None:
    lines = [line(i, 100 + 37 * i, 1 + i % 5, cat=i % 7) for i in range(50)]
    for promo in (
        {"kind": "percent", "value": 15, "category_ids": [1, 3]},
        {"kind": "fixed", "value": 12_345, "product_ids": list(range(0, 50, 3))},
        {"kind": "buy_x_get_y", "buy_quantity": 2, "get_quantity": 1},
    ):
        assert price_cart(lines, promotion=promo, tax_rate_bps=2000) == ref.price_cart(
            lines, promotion=promo, tax_rate_bps=2000
        )


# ---------------------------------------------------------------------------
# bad input: always PricingError (a ValueError)
# ---------------------------------------------------------------------------

BAD_CALLS: dict[str, tuple[Any, dict[str, Any]]] = {
    "negative-price": ([line(1, -1, 1)], {}),
    "zero-quantity": ([line(1, 1, 0)], {}),
    "bool-quantity": ([line(1, 1, True)], {}),
    "float-price": ([line(1, 1.5, 1)], {}),
    "str-price": ([line(1, "100", 1)], {}),
    "missing-quantity": ([{"product_id": 1, "unit_price": 1}], {}),
    "missing-product": ([{"unit_price": 1, "quantity": 1}], {}),
    "huge-int": ([line(1, 2**63, 1)], {}),
    "overflow-line": ([line(1, I64_MAX, 2)], {}),
    "overflow-subtotal": ([line(1, I64_MAX, 1), line(2, 1, 1)], {}),
    "overflow-tax": ([line(1, I64_MAX, 1)], {"tax_rate_bps": 20_000}),
    "lines-not-list": ({"a": 1}, {}),
    "line-not-dict": ([[1, 2, 3, 4]], {}),
    "unknown-currency": ([], {"currency": "XXX"}),
    "lowercase-currency": ([], {"currency": "usd"}),
    "tax-negative": ([], {"tax_rate_bps": -1}),
    "tax-too-high": ([], {"tax_rate_bps": 100_001}),
    "tax-bool": ([], {"tax_rate_bps": True}),
    "tax-float": ([], {"tax_rate_bps": 1.0}),
    "percent-zero": ([], {"promotion": {"kind": "percent", "value": 0}}),
    "percent-101": ([], {"promotion": {"kind": "percent", "value": 101}}),
    "fixed-zero": ([], {"promotion": {"kind": "fixed", "value": 0}}),
    "fixed-missing-value": ([], {"promotion": {"kind": "fixed"}}),
    "bxgy-missing-get": ([], {"promotion": {"kind": "buy_x_get_y", "buy_quantity": 1}}),
    "bxgy-zero-buy": (
        [],
        {"promotion": {"kind": "buy_x_get_y", "buy_quantity": 0, "get_quantity": 1}},
    ),
    "unknown-kind": ([], {"promotion": {"kind": "bogo", "value": 1}}),
    "kind-missing": ([], {"promotion": {"value": 1}}),
    "promotion-not-dict": ([], {"promotion": ["percent", 10]}),
    "negative-min-subtotal": (
        [],
        {"promotion": {"kind": "percent", "value": 5, "min_subtotal": -1}},
    ),
    "product-ids-not-list": ([], {"promotion": {"kind": "percent", "value": 5, "product_ids": 3}}),
    "product-ids-with-str": (
        [],
        {"promotion": {"kind": "percent", "value": 5, "product_ids": ["3"]}},
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_input_is_pricing_error(name: str) -> None:
    lines, kwargs = BAD_CALLS[name]
    with pytest.raises(PricingError):
        price_cart(lines, **kwargs)
    with pytest.raises(ref.ReferencePricingError):
        ref.price_cart(lines, **kwargs)


# ---------------------------------------------------------------------------
# unusual but valid input: the paths beside the fast one (identical interned
# keys, exact ints)
# ---------------------------------------------------------------------------


class _Int(int):
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _Str(str):
    __slots__ = ()


def test_keys_built_at_run_time() -> None:
    # json.loads makes its own key strings: matched by text, not identity.
    text = (
        '[{"product_id": 7, "category_id": 2, "unit_price": 1999, "quantity": 3},'
        ' {"quantity": 2, "unit_price": 5, "product_id": 8, "note": "gift"}]'
    )
    lines = json.loads(text)
    assert all(k is not sys.intern(k) for k in lines[0])
    promo = {"kind": "percent", "value": 10, "category_ids": [2]}
    r = assert_agree(lines, promotion=promo)
    assert [e["line_subtotal"] for e in r["lines"]] == [5997, 10]
    assert discounts(r) == [600, 0]
    keys = [_Str(k) for k in ("product_id", "unit_price", "quantity")]
    r = price_cart([dict(zip(keys, (3, 250, 2), strict=True))])
    assert (r["lines"][0]["product_id"], r["total"]) == (3, 500)


def test_keys_that_are_not_field_names_are_ignored() -> None:
    odd: dict[Any, Any] = {"\ud800": 1, 3: "x", None: 1, "quantityx": 9, b"quantity": 9}
    r = price_cart([{**odd, **line(1, 40, 2)}])
    assert (r["subtotal"], r["lines"][0]["product_id"]) == (80, 1)


def test_int_and_dict_subclasses() -> None:
    lines = [
        _Dict(product_id=_Int(5), category_id=_Int(1), unit_price=_Int(300), quantity=_Int(2)),
        _Dict(line(6, 10, 1)),
    ]
    r = assert_agree(lines, promotion={"kind": "fixed", "value": 50})
    assert discounts(r) == [50, 0]
    # Amounts come back as plain ints, whatever came in.
    assert all(type(v) is int for entry in r["lines"] for v in entry.values())


def test_product_id_comes_back_equal() -> None:
    big = [line(2**62, 3, 1, cat=-(2**63)), line(-(2**63), 0, 1), line(I64_MAX, 1, 2)]
    r = assert_agree(big, promotion={"kind": "percent", "value": 100, "category_ids": [-(2**63)]})
    assert [e["product_id"] for e in r["lines"]] == [2**62, -(2**63), I64_MAX]
    assert [e["line_total"] for e in r["lines"]] == [0, 0, 2]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([line(1, 2**63, 1)], "lines[0].unit_price is out of the 64-bit range"),
        (
            [line(1, 1, 1), line(-(2**63) - 1, 1, 1)],
            "lines[1].product_id is out of the 64-bit range",
        ),
        ([line(1, 1, 1, cat=2**70)], "lines[0].category_id is out of the 64-bit range"),
        ([line(1, 1, _Int(2**64))], "lines[0].quantity is out of the 64-bit range"),
        ([line(1, 1, True)], "lines[0].quantity must be an int, not bool"),
        ([line(1, 1, 1, cat=1.0)], "lines[0].category_id must be an int, not float"),
        (json.loads('[{"product_id": 1, "unit_price": 1}]'), "lines[0].quantity is required"),
        ([{"product_id": 1, "quantity": 1}, "x"], "lines[0].unit_price is required"),
        ([line(1, 1, 1), "x"], "lines[1] must be a dict"),
    ],
)
def test_bad_line_messages(lines: list[Any], message: str) -> None:
    with pytest.raises(PricingError) as info:
        price_cart(lines)
    assert str(info.value) == message


def test_pricing_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown currency"):
        price_cart([], currency="ABC")


@given(st.integers(min_value=0, max_value=I64_MAX), st.integers(min_value=1, max_value=I64_MAX))
@settings(max_examples=200, deadline=None)
def test_single_line_overflow_boundary(price: int, qty: int) -> None:
    ours, theirs = both([line(1, price, qty)])
    assert isinstance(ours, PricingError) == isinstance(theirs, Exception)
    assert isinstance(ours, PricingError) == (price * qty > I64_MAX)
