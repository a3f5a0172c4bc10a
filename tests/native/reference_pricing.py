"""Executable specification of cart pricing, in plain Python.

``server._native.price_cart`` must agree with :func:`price_cart` here, and
``server._native.price_cart_rows`` with :func:`price_rows`, on every valid input
(the property tests in ``test_pricing.py`` and ``test_pricing_rows.py`` check
it; both forms share the rules in :func:`_price`). Amounts are
integers in minor units; Python ints never overflow, so the 64-bit range the
Rust code works in is checked explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

I64_MAX = 2**63 - 1
MAX_TAX_RATE_BPS = 100_000

CURRENCY_EXPONENTS: dict[str, int] = {
    **{c: 0 for c in "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split()},
    **{c: 3 for c in "BHD IQD JOD KWD LYD OMR TND".split()},
    **{
        c: 2
        for c in (
            "AED AUD BRL CAD CHF CNY CZK DKK EUR GBP HKD HUF IDR ILS INR MXN MYR NOK NZD "
            "PHP PLN SAR SEK SGD THB TRY TWD USD ZAR"
        ).split()
    },
}


class ReferencePricingError(ValueError):
    pass


def round_half_even(n: int, d: int) -> int:
    """Round the non-negative rational n/d to the nearest int, ties to even."""
    q, r = divmod(n, d)
    if 2 * r > d or (2 * r == d and q % 2 == 1):
        return q + 1
    return q


def _checked(v: int) -> int:
    if not -(2**63) <= v <= I64_MAX:
        raise ReferencePricingError("amount overflow")
    return v


def _int(v: Any, what: str, *, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ReferencePricingError(f"{what} must be an int")
    if not -(2**63) <= v <= I64_MAX:
        raise ReferencePricingError(f"{what} is out of the 64-bit range")
    return v


@dataclass(frozen=True)
class Promotion:
    kind: str
    value: int
    buy_quantity: int
    get_quantity: int
    min_subtotal: int
    product_ids: frozenset[int]
    category_ids: frozenset[int]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Promotion:
        if not isinstance(d, dict):
            raise ReferencePricingError("promotion must be a dict")
        kind = d.get("kind")
        if kind not in ("percent", "fixed", "buy_x_get_y"):
            raise ReferencePricingError("promotion.kind")
        bxgy = kind == "buy_x_get_y"
        value = _int(d.get("value"), "value", optional=bxgy) or 0
        buy = _int(d.get("buy_quantity"), "buy_quantity", optional=not bxgy) or 0
        get = _int(d.get("get_quantity"), "get_quantity", optional=not bxgy) or 0
        min_subtotal = _int(d.get("min_subtotal"), "min_subtotal", optional=True) or 0
        if kind == "percent" and not 1 <= value <= 100:
            raise ReferencePricingError("percent value must be 1..100")
        if kind == "fixed" and value < 1:
            raise ReferencePricingError("fixed value must be >= 1")
        if bxgy and (buy < 1 or get < 1):
            raise ReferencePricingError("buy/get quantities must be >= 1")
        if min_subtotal < 0:
            raise ReferencePricingError("min_subtotal must be >= 0")
        ids = {}
        for name in ("product_ids", "category_ids"):
            raw = d.get(name)
            if raw is not None and not isinstance(raw, list | tuple):
                raise ReferencePricingError(f"{name} must be a list")
            ids[name] = frozenset(_int(x, name) for x in raw or ())  # type: ignore[misc]
        return cls(kind, value, buy, get, min_subtotal, ids["product_ids"], ids["category_ids"])

    def in_scope(self, product_id: int, category_id: int | None) -> bool:
        if not self.product_ids and not self.category_ids:
            return True
        return product_id in self.product_ids or (
            category_id is not None and category_id in self.category_ids
        )


def _spread_fixed(value: int, subtotals: list[int], scope: list[bool]) -> list[int]:
    """Spread ``min(value, in-scope subtotal)`` in proportion to the line
    subtotals (floor of each share); the remainder goes to the largest in-scope
    line (first on ties), spilling on to the next largest if it has no room."""
    discounts = [0] * len(subtotals)
    scope_total = sum(ls for ls, s in zip(subtotals, scope, strict=True) if s)
    if scope_total == 0:
        return discounts
    amount = min(value, scope_total)
    for i, (ls, s) in enumerate(zip(subtotals, scope, strict=True)):
        if s:
            discounts[i] = amount * ls // scope_total
    remainder = amount - sum(discounts)
    order = sorted((i for i in range(len(subtotals)) if scope[i]), key=lambda i: (-subtotals[i], i))
    for i in order:
        if remainder == 0:
            break
        take = min(subtotals[i] - discounts[i], remainder)
        discounts[i] += take
        remainder -= take
    return discounts


# A cart line as the pricing rules see it: (product_id, category_id, unit_price, quantity).
Row = tuple[int, "int | None", int, int]


@dataclass(frozen=True, slots=True)
class CartFigures:
    """What :func:`price_rows` returns: per-line columns in row order, then totals."""

    line_subtotals: tuple[int, ...]
    line_discounts: tuple[int, ...]
    line_totals: tuple[int, ...]
    subtotal: int
    discount: int
    tax: int
    total: int
    promotion_applied: bool
    currency: str
    exponent: int


def _check_cart_args(tax_rate_bps: Any, currency: Any) -> int:
    if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
        raise ReferencePricingError("unknown currency")
    rate = _int(tax_rate_bps, "tax_rate_bps")
    assert rate is not None
    if not 0 <= rate <= MAX_TAX_RATE_BPS:
        raise ReferencePricingError("tax_rate_bps")
    return rate


def _checked_row(i: int, product_id: Any, category_id: Any, unit_price: Any, quantity: Any) -> Row:
    pid = _int(product_id, "product_id")
    cid = _int(category_id, "category_id", optional=True)
    price = _int(unit_price, "unit_price")
    qty = _int(quantity, "quantity")
    assert pid is not None and price is not None and qty is not None
    if price < 0 or qty < 1:
        raise ReferencePricingError(f"line {i}: unit_price >= 0, quantity >= 1")
    return (pid, cid, price, qty)


def _price(
    rows: list[Row], promotion: dict[str, Any] | None, tax_rate_bps: int, currency: str
) -> CartFigures:
    """The pricing rules, on rows already checked."""
    promo = Promotion.from_dict(promotion) if promotion is not None else None

    subtotals = [_checked(price * qty) for _, _, price, qty in rows]
    subtotal = 0
    for ls in subtotals:
        subtotal = _checked(subtotal + ls)

    discounts = [0] * len(rows)
    if promo is not None and subtotal >= promo.min_subtotal:
        scope = [promo.in_scope(pid, cid) for pid, cid, _, _ in rows]
        if promo.kind == "percent":
            discounts = [
                round_half_even(ls * promo.value, 100) if s else 0
                for ls, s in zip(subtotals, scope, strict=True)
            ]
        elif promo.kind == "fixed":
            discounts = _spread_fixed(promo.value, subtotals, scope)
        else:
            group = promo.buy_quantity + promo.get_quantity
            discounts = [
                (qty // group) * promo.get_quantity * price if s else 0
                for (_, _, price, qty), s in zip(rows, scope, strict=True)
            ]

    discount = _checked(sum(discounts))
    taxable = subtotal - discount
    tax = _checked(round_half_even(taxable * tax_rate_bps, 10_000))
    total = _checked(taxable + tax)
    return CartFigures(
        line_subtotals=tuple(subtotals),
        line_discounts=tuple(discounts),
        line_totals=tuple(ls - d for ls, d in zip(subtotals, discounts, strict=True)),
        subtotal=subtotal,
        discount=discount,
        tax=tax,
        total=total,
        promotion_applied=promo is not None and discount > 0,
        currency=currency,
        exponent=CURRENCY_EXPONENTS[currency],
    )


def price_rows(
    rows: list[Row] | tuple[Row, ...],
    *,
    promotion: dict[str, Any] | None = None,
    tax_rate_bps: int = 0,
    currency: str = "USD",
) -> CartFigures:
    """Price rows ``(product_id, category_id, unit_price, quantity)``."""
    rate = _check_cart_args(tax_rate_bps, currency)
    if not isinstance(rows, list | tuple):
        raise ReferencePricingError("rows must be a list or tuple")
    checked = []
    for i, row in enumerate(rows):
        if not isinstance(row, tuple) or len(row) != 4:
            raise ReferencePricingError(f"rows[{i}] must be a 4-tuple")
        checked.append(_checked_row(i, *row))
    return _price(checked, promotion, rate, currency)


def price_cart(
    lines: list[dict[str, Any]],
    *,
    promotion: dict[str, Any] | None = None,
    tax_rate_bps: int = 0,
    currency: str = "USD",
) -> dict[str, Any]:
    """Price lines given as dicts; the figures of :func:`price_rows`, as dicts."""
    rate = _check_cart_args(tax_rate_bps, currency)
    if not isinstance(lines, list):
        raise ReferencePricingError("lines must be a list")
    rows = []
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            raise ReferencePricingError(f"lines[{i}] must be a dict")
        rows.append(
            _checked_row(
                i,
                line.get("product_id"),
                line.get("category_id"),
                line.get("unit_price"),
                line.get("quantity"),
            )
        )
    figures = _price(rows, promotion, rate, currency)
    return {
        "lines": [
            {
                "product_id": pid,
                "line_subtotal": ls,
                "line_discount": d,
                "line_total": total,
            }
            for (pid, _, _, _), ls, d, total in zip(
                rows,
                figures.line_subtotals,
                figures.line_discounts,
                figures.line_totals,
                strict=True,
            )
        ],
        "subtotal": figures.subtotal,
        "discount": figures.discount,
        "tax": figures.tax,
        "total": figures.total,
        "promotion_applied": figures.promotion_applied,
        "currency": currency,
        "exponent": figures.exponent,
    }
