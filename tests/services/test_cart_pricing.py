"""Cart service rules below the HTTP edge: tax, the checkout contract, quotes."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from server.context import AppContext
from server.domain.errors import NotFound, ValidationFailed
from server.domain.lines import CartLine
from server.services import cart
from server.services.variants import Choice
from tests.conftest import UserFactory
from tests.orders_support import create_product, create_sized_product


def line(product_id: int, unit_price: int, quantity: int) -> CartLine:
    return CartLine(product_id, f"S{product_id}", "n", None, unit_price, quantity)


async def test_tax_is_on_the_discounted_subtotal_rounded_half_even_once(ctx: AppContext) -> None:
    settings = dataclasses.replace(ctx.settings, tax_rate_bps=825)  # 8.25 %
    code = f"TAX{uuid.uuid4().hex[:6]}"
    await ctx.pool.execute(
        "INSERT INTO promotions (code, kind, value) VALUES ($1, 'fixed', 100)", code
    )
    async with ctx.pool.acquire() as conn:
        result = await cart.quote(
            conn, [line(1, 1000, 1), line(2, 1000, 1)], code, settings, strict=True
        )
    priced = result.priced
    # 2000 - 100 = 1900; 1900 * 8.25 % = 156.75 → 157.
    assert (priced.subtotal, priced.discount, priced.tax, priced.total) == (2000, 100, 157, 2057)
    assert [p.line_discount for p in priced.lines] == [50, 50]


async def test_load_cart_lines_gives_lines_in_order_and_the_code(
    ctx: AppContext, make_user: UserFactory
) -> None:
    user, _ = await make_user.create()
    ids = [
        await create_product(ctx.pool, stock=5, price=p, is_active=a)
        for p, a in ((300, True), (100, False), (200, True))
    ]
    await ctx.pool.execute(
        "INSERT INTO carts (user_id, promotion_code) VALUES ($1, 'ANY')", user.id
    )
    for n, product_id in enumerate(ids):
        await ctx.pool.execute(
            "INSERT INTO cart_items (user_id, product_id, variant_id, quantity, added_at) "
            "SELECT $1, $2, id, $3, now() + $4 * interval '1 second' FROM product_variants "
            "WHERE product_id = $2",
            user.id,
            product_id,
            n + 1,
            n,
        )
    async with ctx.pool.acquire() as conn:
        lines, code = await cart.load_cart_lines(conn, user.id)
        empty = await cart.load_cart_lines(conn, user.id + 10_000)
    assert [(x.product_id, x.unit_price, x.quantity) for x in lines] == [
        (ids[0], 300, 1),
        (ids[2], 200, 3),
    ]
    assert code == "ANY"
    assert empty == ([], None)


async def test_quote_rejects_bad_codes_only_when_strict(ctx: AppContext) -> None:
    async with ctx.pool.acquire() as conn:
        with pytest.raises(NotFound):
            await cart.quote(conn, [line(1, 100, 1)], "NO-SUCH", ctx.settings, strict=True)
        lenient = await cart.quote(conn, [line(1, 100, 1)], "NO-SUCH", ctx.settings, strict=False)
    assert lenient.promotion is None and lenient.priced.total == 100


async def test_price_items_validates_items(ctx: AppContext) -> None:
    with pytest.raises(ValidationFailed):
        await cart.price_items(ctx, [], None)
    with pytest.raises(NotFound):
        await cart.price_items(ctx, [cart.QuoteItem(Choice(product_id=2**63), 1)], None)
    with pytest.raises(NotFound):
        await cart.price_items(ctx, [cart.QuoteItem(Choice(variant_id=2**62), 1)], None)


async def test_price_items_prices_each_variant_at_its_own_price(ctx: AppContext) -> None:
    product, sizes = await create_sized_product(
        ctx.pool, stocks={"S": 1, "XL": 1}, price=1000, prices={"XL": 1250}
    )
    plain = await create_product(ctx.pool, stock=1, price=300)
    view = await cart.price_items(
        ctx,
        [
            cart.QuoteItem(Choice(product_id=product, options={"size": "S"}), 2),
            cart.QuoteItem(Choice(variant_id=sizes["XL"]), 1),
            cart.QuoteItem(Choice(product_id=plain), 1),
        ],
        None,
    )
    assert [(i.variant_id, i.options, i.unit_price, i.line_total) for i in view.items] == [
        (sizes["S"], {"size": "S"}, 1000, 2000),
        (sizes["XL"], {"size": "XL"}, 1250, 1250),
        (view.items[2].variant_id, {}, 300, 300),
    ]
    assert view.total == 3550


async def test_price_items_refuses_an_ambiguous_or_mismatched_variant(ctx: AppContext) -> None:
    product, sizes = await create_sized_product(ctx.pool, stocks={"S": 1, "M": 1})
    other = await create_product(ctx.pool, stock=1)
    for choice in (
        Choice(product_id=product),  # which size?
        Choice(product_id=product, options={"size": "XXL"}),  # not a value of the option
        Choice(product_id=product, options={"colour": "red"}),  # not an option
        Choice(product_id=other, variant_id=sizes["S"]),  # a variant of another product
        Choice(variant_id=sizes["S"], options={"size": "M"}),  # not that variant's options
    ):
        with pytest.raises(ValidationFailed):
            await cart.price_items(ctx, [cart.QuoteItem(choice, 1)], None)
    with pytest.raises(ValidationFailed, match="once"):
        await cart.price_items(
            ctx,
            [
                cart.QuoteItem(Choice(variant_id=sizes["S"]), 1),
                cart.QuoteItem(Choice(product_id=product, options={"size": "S"}), 1),
            ],
            None,
        )
