"""``server._native.price_cart_rows``: rows in, columns out — the form the gateway
prices with. Same rules as ``price_cart``; checked against the reference's
``price_rows`` and against ``price_cart`` itself."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server._native import CartFigures, PricingError, price_cart, price_cart_rows

from . import reference_pricing as ref
from .pricing_support import PROPS, agree, currency_st, ids, lines_st, promotion_st, tax_st

I64_MAX = 2**63 - 1
FIELDS = ref.CartFigures.__slots__


def as_rows(lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(x["product_id"], x.get("category_id"), x["unit_price"], x["quantity"]) for x in lines]


def figures(result: CartFigures | ref.CartFigures) -> tuple[Any, ...]:
    return tuple(getattr(result, name) for name in FIELDS)


def rust_figures(rows: Any, **kwargs: Any) -> tuple[Any, ...]:
    return figures(price_cart_rows(rows, **kwargs))


def reference_figures(rows: Any, **kwargs: Any) -> tuple[Any, ...]:
    return figures(ref.price_rows(rows, **kwargs))


def assert_agree(rows: Any, **kwargs: Any) -> Any:
    return agree(rust_figures, reference_figures, rows, **kwargs)


@PROPS
@given(lines=lines_st, promotion=promotion_st, tax=tax_st, currency=currency_st)
def test_agrees_with_reference(
    lines: list[dict[str, Any]], promotion: dict[str, Any] | None, tax: int, currency: str
) -> None:
    assert_agree(as_rows(lines), promotion=promotion, tax_rate_bps=tax, currency=currency)


@PROPS
@given(lines=lines_st, promotion=promotion_st, tax=tax_st, currency=currency_st)
def test_same_figures_as_price_cart(
    lines: list[dict[str, Any]], promotion: dict[str, Any] | None, tax: int, currency: str
) -> None:
    kwargs = {"promotion": promotion, "tax_rate_bps": tax, "currency": currency}
    cart = price_cart(lines, **kwargs)
    rows = price_cart_rows(as_rows(lines), **kwargs)
    assert rows.line_subtotals == tuple(x["line_subtotal"] for x in cart["lines"])
    assert rows.line_discounts == tuple(x["line_discount"] for x in cart["lines"])
    assert rows.line_totals == tuple(x["line_total"] for x in cart["lines"])
    assert (rows.subtotal, rows.discount, rows.tax, rows.total) == (
        cart["subtotal"],
        cart["discount"],
        cart["tax"],
        cart["total"],
    )
    assert (rows.promotion_applied, rows.currency, rows.exponent) == (
        cart["promotion_applied"],
        cart["currency"],
        cart["exponent"],
    )


big = st.integers(min_value=0, max_value=I64_MAX)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            ids,
            st.none(),
            st.one_of(big, st.integers(min_value=2**40, max_value=2**62)),
            st.integers(min_value=1, max_value=2**31),
        ),
        max_size=4,
    ),
    promotion=promotion_st,
    tax=tax_st,
)
def test_overflow_agrees_with_reference(
    rows: list[tuple[Any, ...]], promotion: dict[str, Any] | None, tax: int
) -> None:
    assert_agree(rows, promotion=promotion, tax_rate_bps=tax)


@settings(max_examples=400, deadline=None)
@given(
    rows=st.lists(
        st.tuples(ids, st.none(), st.integers(min_value=0, max_value=3), st.just(1)),
        min_size=2,
        max_size=12,
    ),
    value=st.integers(min_value=1, max_value=40),
)
def test_fixed_remainder_on_tiny_lines_agrees(rows: list[tuple[Any, ...]], value: int) -> None:
    # Tiny lines make the floor shares leave a remainder the largest line cannot always take:
    # the path that places it line by line, largest first.
    ours = assert_agree(rows, promotion={"kind": "fixed", "value": value})
    assert ours[4] == min(value, ours[3])


def test_fifty_rows_with_each_promotion_kind() -> None:
    rows = [(1000 + i, i % 7, 199 + 137 * i, 1 + i % 4) for i in range(50)]
    for promo in (
        {"kind": "percent", "value": 15, "category_ids": [1, 3, 5]},
        {"kind": "fixed", "value": 25_000, "product_ids": list(range(1000, 1050, 2))},
        {"kind": "buy_x_get_y", "buy_quantity": 2, "get_quantity": 1},
    ):
        ours = assert_agree(rows, promotion=promo, tax_rate_bps=825, currency="EUR")
        assert any(ours[1]), "the promotion took something off some line"


class Row(NamedTuple):
    product_id: int
    category_id: int | None
    unit_price: int
    quantity: int


class _Int(int):
    pass


def test_namedtuple_rows_tuple_of_rows_and_int_subclasses() -> None:
    rows = (Row(1, 2, 500, 2), Row(2, None, _Int(250), _Int(1)))
    r = price_cart_rows(rows, promotion={"kind": "percent", "value": 10, "category_ids": [2]})
    assert (r.line_subtotals, r.line_discounts, r.line_totals) == (
        (1000, 250),
        (100, 0),
        (900, 250),
    )
    assert all(type(v) is int for v in r.line_subtotals + r.line_totals)
    assert assert_agree(list(rows)) == assert_agree(rows)


def test_empty_cart() -> None:
    r = price_cart_rows([], currency="JPY", tax_rate_bps=1000)
    assert figures(r) == ((), (), (), 0, 0, 0, 0, False, "JPY", 0)


def test_figures_are_read_only() -> None:
    r = price_cart_rows([(1, None, 100, 1)])
    with pytest.raises(AttributeError):
        r.total = 0  # type: ignore[misc]
    assert repr(r) == (
        'CartFigures(subtotal=100, discount=0, tax=0, total=100, currency="USD", lines=1)'
    )


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        ({"a": 1}, {}, "rows must be a list or tuple, not dict"),
        (iter([(1, None, 1, 1)]), {}, "rows must be a list or tuple, not list_iterator"),
        ("abcd", {}, "rows must be a list or tuple, not str"),
        (
            [[1, None, 1, 1]],
            {},
            "rows[0] must be a tuple (product_id, category_id, unit_price, quantity)",
        ),
        (
            [(1, None, 1, 1), (1, None, 1)],
            {},
            "rows[1] must be a tuple (product_id, category_id, unit_price, quantity)",
        ),
        (
            [(1, None, 1, 1, 0)],
            {},
            "rows[0] must be a tuple (product_id, category_id, unit_price, quantity)",
        ),
        ([(None, None, 1, 1)], {}, "rows[0].product_id must be an int, not NoneType"),
        ([(1, None, None, 1)], {}, "rows[0].unit_price must be an int, not NoneType"),
        ([(1, None, 1, True)], {}, "rows[0].quantity must be an int, not bool"),
        ([(1, 1.0, 1, 1)], {}, "rows[0].category_id must be an int, not float"),
        ([(1, None, "9", 1)], {}, "rows[0].unit_price must be an int, not str"),
        ([(1, None, 2**63, 1)], {}, "rows[0].unit_price is out of the 64-bit range"),
        (
            [(1, None, 1, 1), (-(2**63) - 1, None, 1, 1)],
            {},
            "rows[1].product_id is out of the 64-bit range",
        ),
        ([(1, None, -1, 1)], {}, "lines[0].unit_price must be >= 0"),
        ([(1, None, 1, 0)], {}, "lines[0].quantity must be >= 1"),
        ([(1, None, I64_MAX, 2)], {}, "amount overflow"),
        ([], {"currency": "usd"}, 'unknown currency: "usd"'),
        ([], {"tax_rate_bps": 100_001}, "tax_rate_bps must be 0..=100000"),
        (
            [],
            {"promotion": {"kind": "percent", "value": 0}},
            "promotion.value must be 1..=100 for 'percent'",
        ),
    ],
)
def test_bad_rows_are_pricing_errors(rows: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PricingError) as info:
        price_cart_rows(rows, **kwargs)
    assert str(info.value) == message
    # The reference refuses the same input (it iterates a list or tuple only).
    with pytest.raises(ref.ReferencePricingError):
        ref.price_rows(rows, **kwargs)
