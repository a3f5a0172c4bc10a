"""Pricing of a list of lines with an optional promotion: the one place REST cart, gRPC
PriceCart and checkout get their figures from. The arithmetic is the Rust engine's."""

from __future__ import annotations

from dataclasses import dataclass

from server.db.promotions import Promotion
from server.domain.errors import ValidationFailed
from server.domain.lines import CartLine, PricedLine
from server.native import PricingError, price_cart_rows


@dataclass(frozen=True, slots=True)
class PricedCart:
    lines: list[PricedLine]
    subtotal: int
    discount: int
    tax: int
    total: int
    currency: str
    # The code whose discount is in these figures; None when none applied.
    promotion_code: str | None
    # True when a promotion was given but its min_subtotal was not reached.
    below_minimum: bool


def _promotion_arg(promotion: Promotion) -> dict[str, object]:
    return {
        "kind": promotion.kind,
        "value": promotion.value,
        "buy_quantity": promotion.buy_quantity,
        "get_quantity": promotion.get_quantity,
        "min_subtotal": promotion.min_subtotal,
        "product_ids": promotion.product_ids,
        "category_ids": promotion.category_ids,
    }


def price_lines(
    lines: list[CartLine], promotion: Promotion | None, *, tax_rate_bps: int, currency: str
) -> PricedCart:
    """Price `lines`; `promotion` must already be known usable (dates, usage limit)."""
    try:
        figures = price_cart_rows(
            [(line.product_id, line.category_id, line.unit_price, line.quantity) for line in lines],
            promotion=_promotion_arg(promotion) if promotion is not None else None,
            tax_rate_bps=tax_rate_bps,
            currency=currency,
        )
    except PricingError as exc:
        raise ValidationFailed(f"cannot price this cart: {exc}") from None
    priced = [
        PricedLine(
            line.product_id,
            line.variant_id,
            line.sku,
            line.name,
            line.options,
            line.quantity,
            line.unit_price,
            line_subtotal,
            line_discount,
            line_total,
        )
        for line, line_subtotal, line_discount, line_total in zip(
            lines,
            figures.line_subtotals,
            figures.line_discounts,
            figures.line_totals,
            strict=True,
        )
    ]
    # The engine reports `promotion_applied` only when money came off; a promotion whose
    # minimum is met but whose scope matches no line still counts as applied (discount 0).
    below_minimum = promotion is not None and figures.subtotal < promotion.min_subtotal
    applied = promotion is not None and not below_minimum
    return PricedCart(
        lines=priced,
        subtotal=figures.subtotal,
        discount=figures.discount,
        tax=figures.tax,
        total=figures.total,
        currency=currency,
        promotion_code=promotion.code if applied and promotion is not None else None,
        below_minimum=below_minimum,
    )
