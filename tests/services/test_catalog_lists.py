"""Cached public list pages: the view (ids and cursor) may be up to LIST_CACHE_TTL old, but the
items are the products' current pages, and they still pass the page's filters."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest

from server import metrics
from server.context import AppContext
from server.db.catalog import Category
from server.services import catalog
from server.services.catalog import ProductCreate, ProductQuery, ProductUpdate
from server.services.variants import OptionSpec, VariantCreate


def view_fills() -> float:
    return metrics.sample("cache_lookups_total", {"namespace": "product-lists", "result": "miss"})


async def page(ctx: AppContext, **query: Any) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(
        await catalog.public_product_page(ctx, ProductQuery(**query))
    )
    return body


async def new_category(ctx: AppContext) -> Category:
    return await catalog.create_category(
        ctx.pool, catalog.CategoryCreate(name=f"Lists {uuid.uuid4().hex[:8]}")
    )


async def simple(ctx: AppContext, word: str, price: int, stock: int, **fields: Any) -> int:
    product = await catalog.create_product(
        ctx,
        ProductCreate(
            sku=f"L-{uuid.uuid4().hex[:10]}",
            name=f"{word} item {price}",
            price=price,
            stock=stock,
            **fields,
        ),
    )
    return product.id


async def sized(
    ctx: AppContext, word: str, price: int, stocks: dict[str, int], **fields: Any
) -> int:
    sku = f"L-{uuid.uuid4().hex[:10]}"
    product = await catalog.create_product(
        ctx,
        ProductCreate(
            sku=sku,
            name=f"{word} sized {price}",
            price=price,
            options=[OptionSpec(name="size", values=list(stocks))],
            variants=[
                VariantCreate(sku=f"{sku}-{size}", stock=stock, options={"size": size})
                for size, stock in stocks.items()
            ],
            **fields,
        ),
    )
    return product.id


async def test_a_cached_page_is_the_uncached_page_byte_for_byte(ctx: AppContext) -> None:
    word = f"bytes{uuid.uuid4().hex[:8]}"
    category = await new_category(ctx)
    for price in (300, 100, 500, 200):
        await simple(ctx, word, price, stock=price // 100 - 1, category_id=category.id)
    await sized(ctx, word, 400, {"S": 0, "M": 2, "L": 1}, category_id=category.id)
    shapes: list[dict[str, Any]] = [
        {"q": word},
        {"q": word, "sort": "price", "limit": 2},
        {"q": word, "sort": "-price", "in_stock": True},
        {"category": str(category.id), "sort": "name"},
        {"category": category.slug, "min_price": 200, "max_price": 400},
        {"category": category.slug, "option": ("size:M",), "in_stock": True},
        {"category": category.slug, "option": ("size:S",), "in_stock": True},  # none
    ]
    first = await page(ctx, q=word, sort="price", limit=2)
    shapes.append({"q": word, "sort": "price", "limit": 2, "cursor": first["next_cursor"]})
    for shape in shapes:
        query = ProductQuery(**shape)
        uncached = msgspec.json.encode(await catalog.list_products(ctx.pool, query, None))
        assert await catalog.public_product_page(ctx, query) == uncached, shape  # filled
        assert await catalog.public_product_page(ctx, query) == uncached, shape  # from the cache
    assert [p["price"] for p in first["items"]] == [100, 200]


async def test_a_listed_product_is_exact_while_the_view_is_cached(ctx: AppContext) -> None:
    word = f"exact{uuid.uuid4().hex[:8]}"
    kept = await simple(ctx, word, 100, stock=5)
    withdrawn = await simple(ctx, word, 200, stock=5)
    assert [p["id"] for p in (await page(ctx, q=word, sort="price"))["items"]] == [kept, withdrawn]
    fills = view_fills()

    await catalog.adjust_stock(ctx, kept, -2)
    await catalog.update_product(ctx, kept, ProductUpdate(price=150, name=f"{word} renamed"))
    await catalog.delete_product(ctx, withdrawn)

    items = (await page(ctx, q=word, sort="price"))["items"]
    assert [(p["id"], p["stock"], p["price"], p["name"]) for p in items] == [
        (kept, 3, 150, f"{word} renamed")
    ]
    assert view_fills() == fills  # the view itself was not read again


async def test_items_that_left_the_filters_are_left_out_and_the_cursor_goes_on(
    ctx: AppContext,
) -> None:
    word = f"filter{uuid.uuid4().hex[:8]}"
    cheap, sold_out, repriced, last = [
        await simple(ctx, word, price, stock=3) for price in (100, 200, 300)
    ] + [await sized(ctx, word, 400, {"S": 1, "M": 1})]
    in_stock = {"q": word, "sort": "price", "in_stock": True, "max_price": 1000, "limit": 3}
    by_size = {"q": word, "option": ("size:M",), "in_stock": True}
    first = await page(ctx, **in_stock)
    assert [p["id"] for p in first["items"]] == [cheap, sold_out, repriced]
    assert [p["id"] for p in (await page(ctx, **by_size))["items"]] == [last]
    fills = view_fills()

    await catalog.adjust_stock(ctx, sold_out, -3)  # no longer in stock
    await catalog.update_product(ctx, repriced, ProductUpdate(price=5000))  # over max_price
    size_m = next(
        v.id
        for v in (await catalog.get_product(ctx.pool, last, None)).variants
        if v.options == {"size": "M"}
    )
    await catalog.adjust_stock(ctx, last, -1, size_m)  # size M sold out, S still there

    shortened = await page(ctx, **in_stock)
    assert [p["id"] for p in shortened["items"]] == [cheap]  # fewer items than the limit
    assert (await page(ctx, **by_size))["items"] == []
    assert view_fills() == fills
    # The cursor is the view's: the next page starts after the last product it listed.
    after = await page(ctx, **in_stock, cursor=shortened["next_cursor"])
    assert [p["id"] for p in after["items"]] == [last] and after["next_cursor"] is None


async def test_a_new_product_takes_its_place_within_the_view_bound(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Membership is the view's: a product created after the view was read is listed once the
    view expires (LIST_CACHE_TTL, shortened here)."""
    monkeypatch.setattr(catalog, "LIST_CACHE_TTL", 0.3)
    word = f"member{uuid.uuid4().hex[:8]}"
    first = await simple(ctx, word, 100, stock=1)
    assert [p["id"] for p in (await page(ctx, q=word))["items"]] == [first]
    second = await simple(ctx, word, 200, stock=1)
    assert [p["id"] for p in (await page(ctx, q=word))["items"]] == [first]  # the view's
    await asyncio.sleep(0.35)
    assert [p["id"] for p in (await page(ctx, q=word))["items"]] == [second, first]
