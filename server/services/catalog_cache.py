"""Retiring cached product pages after writes (the freshness rules are in services/catalog.py,
"cached public reads"). Its own module so that every writer of products, variants and stock
(catalog, variants, checkout, cancellation, the expiry job) can call it without importing the
catalog's reads."""

from __future__ import annotations

from collections.abc import Iterable

from server.cache import PRODUCT_LISTS, PRODUCTS
from server.context import AppContext


def product_key(product_id: int) -> str:
    return f"id:{product_id}"


async def stock_changed(ctx: AppContext, product_ids: Iterable[int]) -> None:
    """Stock of these products moved: their pages retire; lists keep their short bound."""
    await ctx.cache.invalidate(PRODUCTS, [product_key(i) for i in sorted(set(product_ids))])


async def product_changed(ctx: AppContext, product_id: int) -> None:
    """An admin changed this product: its page retires; lists follow within their TTL."""
    await ctx.cache.invalidate(PRODUCTS, [product_key(product_id)])


async def lists_changed(ctx: AppContext) -> None:
    await ctx.cache.bump(PRODUCT_LISTS)


async def catalog_changed(ctx: AppContext) -> None:
    """Many product bodies changed at once (a category delete): retire everything."""
    await ctx.cache.bump(PRODUCTS)
    await ctx.cache.bump(PRODUCT_LISTS)
