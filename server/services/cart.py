"""Cart rules: one server-side cart per user, priced on every read by `pricing.price_lines`.

Decisions (also in the OpenAPI descriptions):
- Lines whose product became inactive are left out of the priced cart (and out of checkout);
  the row stays, so the line returns if the product is reactivated.
- A line is one variant. `POST /cart/items` names it by `variant_id`, or by `product_id` and
  `options` (`{"size": "M"}`), or by `product_id` alone for a product with one variant; the
  line paths take the product id, plus `?variant_id=` when the cart holds several variants of
  that product.
- Stock is checked when a quantity is added or set (409 when the cart would hold more than the
  stock); checkout re-checks atomically, since stock moves in between.
- An attached promotion that became unusable (expired, used up, deleted) or whose minimum is no
  longer reached is kept attached but not applied: the cart is priced without it and
  `promotion_code` is null. It applies again by itself once usable (e.g. the subtotal grows).
- `promotion_code` in a priced cart is the code in effect: usable and its minimum reached, even
  when no line is in its scope yet (discount 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import msgspec

from server.config import Settings
from server.context import AppContext
from server.db import carts as repo
from server.db import promotions as promotions_repo
from server.db.promotions import Promotion
from server.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from server.domain.lines import CartLine, PricedLine
from server.domain.values import INT64_MAX, MAX_QUANTITY, Id, Quantity
from server.services.catalog import NO_NUL
from server.services.pricing import PricedCart, price_lines
from server.services.variants import Choice, Selection, choose_variants

QuantityOrZero = Annotated[
    int, msgspec.Meta(ge=0, le=MAX_QUANTITY, description="0 removes the line")
]
PromotionCode = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]


class CartItemAdd(msgspec.Struct, forbid_unknown_fields=True):
    """The variant is `variant_id`, else the product's variant with `options`, else the
    product's only variant."""

    quantity: Quantity
    product_id: Id | msgspec.UnsetType = msgspec.UNSET
    variant_id: Id | msgspec.UnsetType = msgspec.UNSET
    options: Selection | msgspec.UnsetType = msgspec.UNSET

    json_schema_rules: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": ["product_id"]}, {"required": ["variant_id"]}]
    }


class CartItemUpdate(msgspec.Struct, forbid_unknown_fields=True):
    quantity: QuantityOrZero


class CartPromotionApply(msgspec.Struct, forbid_unknown_fields=True):
    code: PromotionCode


class CartLineView(PricedLine, frozen=True):
    # The priced line under the name the REST schema has always given it (its fields are
    # PricedLine's, so a view is that line's values in the same order).
    pass


class CartView(msgspec.Struct):
    """A priced cart. Amounts are minor units of `currency`; line discounts are rounded
    half-even per line, tax half-even once on the discounted subtotal."""

    items: list[CartLineView]
    subtotal: int
    discount: int
    tax: int
    total: int
    currency: str
    promotion_code: str | None


# ---- for checkout and gRPC -------------------------------------------------------------------


async def load_cart_lines(conn: repo.Executor, user_id: int) -> tuple[list[CartLine], str | None]:
    """The user's purchasable cart lines and the attached promotion code (not yet validated)."""
    return await repo.load_lines(conn, user_id)


@dataclass(frozen=True, slots=True)
class Quote:
    priced: PricedCart
    # The promotion in effect (usable, minimum reached); None when none.
    promotion: Promotion | None


def _price(lines: list[CartLine], promotion: Promotion | None, settings: Settings) -> PricedCart:
    return price_lines(
        lines, promotion, tax_rate_bps=settings.tax_rate_bps, currency=settings.store_currency
    )


def _subtotal(lines: list[CartLine]) -> int:
    return sum(line.unit_price * line.quantity for line in lines)


def _unusable(promotion: Promotion | None, now: datetime) -> str | None:
    if promotion is None:
        return "no such promotion"
    return promotion.unusable_reason(now)


async def quote(
    conn: repo.Executor,
    lines: list[CartLine],
    code: str | None,
    settings: Settings,
    *,
    strict: bool,
) -> Quote:
    """Price `lines` with the promotion `code`. `strict`: a code that is unknown (NotFound),
    unusable or below its minimum (ValidationFailed) is an error; else it is just not applied."""
    if code is None:
        return Quote(_price(lines, None, settings), None)
    promotion = await promotions_repo.get_by_code(conn, code)
    if promotion is None and strict:
        raise NotFound("no such promotion code")
    reason = _unusable(promotion, datetime.now(UTC))
    if reason is None and promotion is not None and _subtotal(lines) < promotion.min_subtotal:
        reason = f"the subtotal is below this promotion's minimum of {promotion.min_subtotal}"
    if reason is not None:
        if strict:
            raise ValidationFailed(reason, errors=[FieldError("code", reason)])
        return Quote(_price(lines, None, settings), None)
    return Quote(_price(lines, promotion, settings), promotion)


def view(result: Quote) -> CartView:
    priced = result.priced
    return CartView(
        items=[CartLineView(*msgspec.structs.astuple(line)) for line in priced.lines],
        subtotal=priced.subtotal,
        discount=priced.discount,
        tax=priced.tax,
        total=priced.total,
        currency=priced.currency,
        promotion_code=result.promotion.code if result.promotion is not None else None,
    )


@dataclass(frozen=True, slots=True)
class QuoteItem:
    choice: Choice
    quantity: int


async def price_items(ctx: AppContext, items: list[QuoteItem], code: str | None) -> CartView:
    """A quote for explicit items (gRPC PriceCart). Nothing is stored, stock is not checked."""
    if not items:
        raise ValidationFailed("at least one item is needed", errors=[FieldError("items", "empty")])
    for index, item in enumerate(items):
        for name in ("product_id", "variant_id"):
            value = getattr(item.choice, name)
            if value is not None and not 1 <= value <= INT64_MAX:
                raise NotFound(f"no such {name.removesuffix('_id')}: {value}")
        if not 1 <= item.quantity <= MAX_QUANTITY:
            raise ValidationFailed(
                "invalid quantity",
                errors=[FieldError(f"items[{index}].quantity", f"between 1 and {MAX_QUANTITY}")],
            )
    async with ctx.pool.acquire() as conn:
        chosen = await choose_variants(conn, [i.choice for i in items], field_prefix="items")
        if len({v.id for v in chosen}) != len(chosen):
            raise ValidationFailed(
                "each variant may appear once", errors=[FieldError("items", "duplicate variant")]
            )
        lines = [
            CartLine(
                v.product_id,
                v.sku,
                v.product_name,
                v.category_id,
                v.price,
                item.quantity,
                v.id,
                v.options,
            )
            for v, item in zip(chosen, items, strict=True)
        ]
        return view(await quote(conn, lines, code, ctx.settings, strict=True))


# ---- the REST cart ---------------------------------------------------------------------------


async def get_cart(ctx: AppContext, user_id: int) -> CartView:
    async with ctx.pool.acquire() as conn:
        lines, code = await repo.load_lines(conn, user_id)
        return view(await quote(conn, lines, code, ctx.settings, strict=False))


def _checked_quantity(state: repo.ItemState | None, quantity: int) -> None:
    if state is None or not state.sellable:
        raise NotFound("no such product or variant (or it is not for sale)")
    if quantity > MAX_QUANTITY:
        raise ValidationFailed(
            "too many units",
            errors=[FieldError("quantity", f"a line holds at most {MAX_QUANTITY} units")],
        )
    if quantity > state.stock:
        raise Conflict(f"only {state.stock} in stock")


async def _priced(conn: repo.Executor, ctx: AppContext, user_id: int) -> CartView:
    lines, code = await repo.load_lines(conn, user_id)
    return view(await quote(conn, lines, code, ctx.settings, strict=False))


async def add_item(ctx: AppContext, user_id: int, data: CartItemAdd) -> CartView:
    """Adds to the variant's line (quantities sum)."""
    choice = Choice(
        None if data.product_id is msgspec.UNSET else data.product_id,
        None if data.variant_id is msgspec.UNSET else data.variant_id,
        None if data.options is msgspec.UNSET else data.options,
    )
    async with ctx.pool.acquire() as conn:
        (variant,) = await choose_variants(conn, [choice])
        async with conn.transaction():
            await repo.lock_cart(conn, user_id)
            state = await repo.item_state(conn, user_id, variant.id)
            quantity = data.quantity + (state.in_cart if state else 0)
            _checked_quantity(state, quantity)
            await repo.set_quantity(conn, user_id, variant.product_id, variant.id, quantity)
        return await _priced(conn, ctx, user_id)


async def _line_variant(
    conn: repo.Executor, user_id: int, product_id: int, variant_id: int | None
) -> int:
    """The variant of the cart's line of `product_id` the path names."""
    lines = await repo.lines_of_product(conn, user_id, product_id)
    if variant_id is not None:
        if all(v != variant_id for v, _ in lines):
            raise NotFound("this variant is not in your cart")
        return variant_id
    if not lines:
        raise NotFound("this product is not in your cart")
    if len(lines) > 1:
        raise ValidationFailed(
            "your cart holds several variants of this product",
            errors=[FieldError("variant_id", "name the line's variant (?variant_id=)")],
        )
    return lines[0][0]


async def set_item_quantity(
    ctx: AppContext,
    user_id: int,
    product_id: int,
    data: CartItemUpdate,
    variant_id: int | None = None,
) -> CartView:
    """Sets the line's quantity; 0 removes it. A line not in the cart is NotFound."""
    async with ctx.pool.acquire() as conn:
        async with conn.transaction():
            await repo.lock_cart(conn, user_id)
            chosen = await _line_variant(conn, user_id, product_id, variant_id)
            if data.quantity == 0:
                await repo.remove_item(conn, user_id, chosen)
            else:
                _checked_quantity(await repo.item_state(conn, user_id, chosen), data.quantity)
                await repo.set_quantity(conn, user_id, product_id, chosen, data.quantity)
        return await _priced(conn, ctx, user_id)


async def remove_item(
    ctx: AppContext, user_id: int, product_id: int, variant_id: int | None = None
) -> CartView:
    async with ctx.pool.acquire() as conn:
        async with conn.transaction():
            await repo.lock_cart(conn, user_id)
            chosen = await _line_variant(conn, user_id, product_id, variant_id)
            await repo.remove_item(conn, user_id, chosen)
        return await _priced(conn, ctx, user_id)


async def apply_promotion(ctx: AppContext, user_id: int, data: CartPromotionApply) -> CartView:
    """404 for an unknown code; 422 when it is not usable now or the cart is below its minimum."""
    async with ctx.pool.acquire() as conn:
        lines, _ = await repo.load_lines(conn, user_id)
        result = await quote(conn, lines, data.code, ctx.settings, strict=True)
        assert result.promotion is not None
        await repo.set_promotion(conn, user_id, result.promotion.code)
        return view(result)


async def remove_promotion(ctx: AppContext, user_id: int) -> CartView:
    async with ctx.pool.acquire() as conn:
        await repo.set_promotion(conn, user_id, None)
        lines, _ = await repo.load_lines(conn, user_id)
        return view(await quote(conn, lines, None, ctx.settings, strict=False))
