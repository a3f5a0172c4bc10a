"""Catalog rules without the network: slugs, cursors, visibility and stock adjustment."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from server.cache import PRODUCT_LISTS
from server.context import AppContext
from server.db.catalog import Product
from server.domain.errors import BadRequest, Conflict, NotFound
from server.domain.principal import Principal
from server.services import catalog


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Men's Shoes", "men-s-shoes"),
        ("  Über Größe  ", "uber-groe"),
        ("A--B", "a-b"),
        ("日本", ""),
        ("Café Crème", "cafe-creme"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert catalog.slugify(name) == slug


def product(**changes: object) -> Product:
    values: dict[str, object] = {
        "id": 7,
        "sku": "S",
        "name": "O'Brien",
        "description": "",
        "category_id": None,
        "price": 10,
        "currency": "USD",
        "stock": 1,
        "is_active": True,
        "created_at": datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "updated_at": datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
    }
    return Product(**{**values, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("sort", catalog.SORTS)
def test_cursor_round_trips_each_sort(sort: str) -> None:
    item = product()
    key, last_id = catalog.decode_cursor(catalog.encode_cursor(sort, item), sort)
    expected = {"price": item.price, "created_at": item.created_at, "name": item.name}
    column = {
        "price": "price",
        "-price": "price",
        "created": "created_at",
        "-created": "created_at",
        "name": "name",
    }[sort]
    assert (key, last_id) == (expected[column], 7)


@pytest.mark.parametrize("cursor", ["", "!!!", "W10", "WyJwcmljZSIsMSwtMV0"])
def test_broken_cursors_are_bad_requests(cursor: str) -> None:
    with pytest.raises(BadRequest):
        catalog.decode_cursor(cursor, "price")


def test_etag_moves_with_stock_and_updates() -> None:
    base = catalog.etag(product())
    assert catalog.etag(product(stock=2)) != base
    assert catalog.etag(product(updated_at=datetime(2025, 1, 1, tzinfo=UTC))) != base
    assert catalog.etag(product()) == base


async def test_inactive_visible_to_admin_only(ctx: AppContext) -> None:
    hidden = await catalog.create_product(
        ctx,
        catalog.ProductCreate(
            sku=f"VIS-{uuid.uuid4().hex[:8]}", name="Hidden", price=1, stock=1, is_active=False
        ),
    )
    with pytest.raises(NotFound):
        await catalog.get_product(ctx.pool, hidden.id, None)
    with pytest.raises(NotFound):
        await catalog.get_product(ctx.pool, hidden.id, Principal(1, "service"))
    assert (await catalog.get_product(ctx.pool, hidden.id, Principal(1, "admin"))).id == hidden.id


async def test_adjust_stock_bounds(ctx: AppContext) -> None:
    item = await catalog.create_product(
        ctx, catalog.ProductCreate(sku=f"ADJ-{uuid.uuid4().hex[:8]}", name="Adj", price=1, stock=2)
    )
    assert (await catalog.adjust_stock(ctx, item.id, -2)).stock == 0
    with pytest.raises(Conflict):
        await catalog.adjust_stock(ctx, item.id, -1)
    with pytest.raises(BadRequest):
        await catalog.adjust_stock(ctx, item.id, 2**31 - 1)
        await catalog.adjust_stock(ctx, item.id, 2**31 - 1)


async def test_admin_product_writes_retire_the_page_not_the_lists(ctx: AppContext) -> None:
    """Lists are a view bounded by LIST_CACHE_TTL; a product page is exact at once."""
    product = await catalog.create_product(
        ctx,
        catalog.ProductCreate(sku=f"RET-{uuid.uuid4().hex[:8]}", name="Kettle", price=100, stock=3),
    )
    await catalog.public_product(ctx, product.id)  # cached
    lists_before = await ctx.cache._version(PRODUCT_LISTS)
    page_fills = ctx.cache._sequence

    await catalog.update_product(ctx, product.id, catalog.ProductUpdate(price=250))

    assert await ctx.cache._version(PRODUCT_LISTS) == lists_before
    assert ctx.cache._sequence > page_fills  # the page's key was retired
    _, body = await catalog.public_product(ctx, product.id)
    assert b'"price":250' in body
    category = await catalog.create_category(
        ctx.pool, catalog.CategoryCreate(name=f"Cat {uuid.uuid4().hex[:6]}")
    )
    await catalog.update_category(ctx, category.id, catalog.CategoryUpdate(name="Renamed"))
    assert await ctx.cache._version(PRODUCT_LISTS) > lists_before  # a category write does
