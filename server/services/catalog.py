"""Catalog rules: categories, products, visibility, listing with filters and keyset cursors.

- Inactive products are invisible (NotFound) to everyone but admins.
- `category` filters match the category and all its descendants (a recursive CTE).
- Cursors are opaque base64url JSON `[sort, key, id]` of the last row; a cursor only continues the
  sort it was made for (another sort → BadRequest).
- Slugs contain at least one letter, so `category=<digits>` is always an id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

import asyncpg
import msgspec

from server.cache import PRODUCT_LISTS, PRODUCTS
from server.context import AppContext
from server.db import catalog as repo
from server.db.catalog import Category, Product, ProductFilter
from server.domain.errors import BadRequest, Conflict, FieldError, NotFound, ValidationFailed
from server.domain.principal import Principal

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_PRICE = 10**12  # minor units; keeps price x 999 x many lines far from int64 overflow
MAX_BATCH_IDS = 500
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
DEFAULT_SORT = "-created"
SORTS = tuple(repo.SORT_ORDERS)

# PostgreSQL text cannot hold NUL; rejecting it at the edge keeps it a 422, never a 500.
NO_NUL = "^[^\x00]*$"
SLUG_PATTERN = "^[a-z0-9]+(-[a-z0-9]+)*$"

Id = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
CategoryName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Slug = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=SLUG_PATTERN,
        description="lowercase ASCII letters and digits, hyphens "
        "between words; at least one letter",
        extra_json_schema={"allOf": [{"pattern": "[a-z]"}]},
    ),
]
Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
ProductName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=10_000, pattern=NO_NUL)]
Price = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRICE, description="minor units")]
Currency = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Z]{3}$",
        description="ISO 4217; must be the store currency",
        # server/openapi.py (STORE_CURRENCY) writes the configured store currency here.
        extra_json_schema={"x-store-currency": True},
    ),
]
Stock = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]


class CategoryCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: CategoryName
    slug: Slug | None = None
    parent_id: Id | None = None

    # Without a slug, one is derived from the name, and it needs a letter (digits alone are ids).
    json_schema_rules: ClassVar[dict[str, Any]] = {
        "anyOf": [
            {"required": ["slug"], "properties": {"slug": {"type": "string"}}},
            {"properties": {"name": {"pattern": "[A-Za-z]"}}},
        ]
    }


class CategoryUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; `parent_id: null` makes the category a root."""

    name: CategoryName | msgspec.UnsetType = msgspec.UNSET
    slug: Slug | msgspec.UnsetType = msgspec.UNSET
    parent_id: Id | msgspec.UnsetType | None = msgspec.UNSET


class ProductCreate(msgspec.Struct, forbid_unknown_fields=True):
    sku: Sku
    name: ProductName
    price: Price
    stock: Stock
    description: Description = ""
    category_id: Id | None = None
    currency: Currency | None = None
    is_active: bool = True


class ProductUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; `category_id: null` removes the category."""

    sku: Sku | msgspec.UnsetType = msgspec.UNSET
    name: ProductName | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    category_id: Id | msgspec.UnsetType | None = msgspec.UNSET
    price: Price | msgspec.UnsetType = msgspec.UNSET
    currency: Currency | msgspec.UnsetType = msgspec.UNSET
    stock: Stock | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET


class CategoryList(msgspec.Struct):
    items: list[Category]


class ProductPage(msgspec.Struct):
    items: list[Product]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ProductQuery:
    """`GET /products` and `ListProducts` parameters, already typed but not yet validated."""

    category: str | None = None
    q: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool = False
    sort: str | None = None
    limit: int | None = None
    cursor: str | None = None


def changed_fields(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body actually carries."""
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}


# ---- categories ------------------------------------------------------------------------------


def slugify(name: str) -> str:
    """`"Café Crème & Co."` → `"cafe-creme-co"`: ASCII-folded, lowercase, hyphen-separated."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "-".join(re.findall(r"[a-z0-9]+", ascii_name.lower()))[:100].strip("-")


def _checked_slug(slug: str, *, derived: bool) -> str:
    if not slug or not re.search(r"[a-z]", slug):
        message = (
            "cannot derive a slug with a letter from this name; give one"
            if derived
            else "a slug needs at least one letter (digits alone are ids)"
        )
        raise ValidationFailed("invalid slug", errors=[FieldError("slug", message)])
    return slug


async def list_categories(conn: repo.Executor) -> CategoryList:
    return CategoryList(await repo.list_categories(conn))


async def create_category(conn: repo.Executor, data: CategoryCreate) -> Category:
    slug = _checked_slug(
        data.slug if data.slug is not None else slugify(data.name), derived=data.slug is None
    )
    return await repo.insert_category(conn, data.name, slug, data.parent_id)


async def update_category(ctx: AppContext, category_id: int, data: CategoryUpdate) -> Category:
    changes = changed_fields(data)
    if "slug" in changes:
        _checked_slug(changes["slug"], derived=False)
    category = await _update_category(ctx.pool, category_id, changes)
    await lists_changed(ctx)  # `category=` filters follow the tree and the slug
    return category


async def _update_category(
    pool: asyncpg.Pool, category_id: int, changes: dict[str, Any]
) -> Category:
    async with pool.acquire() as conn, conn.transaction():
        parent_id = changes.get("parent_id")
        if parent_id is not None:
            await repo.lock_category_tree(conn)
            await repo.get_category(conn, category_id)  # 404 before 422
            if await repo.is_ancestor_or_self(conn, category_id, parent_id):
                raise ValidationFailed(
                    "a category cannot be moved under itself",
                    errors=[FieldError("parent_id", "would make a cycle in the category tree")],
                )
        return await repo.update_category(conn, category_id, changes)


async def delete_category(ctx: AppContext, category_id: int) -> None:
    await repo.delete_category(ctx.pool, category_id)
    await catalog_changed(ctx)  # its products lost their category: many bodies changed


# ---- products --------------------------------------------------------------------------------


def etag(product: Product) -> str:
    """Strong validator: changes whenever the representation can (stock included, since checkout
    may move stock without going through this module)."""
    stamp = int(product.updated_at.timestamp() * 1_000_000)
    return f'"{product.id}-{stamp:x}-{product.stock}"'


def _visible(product: Product | None, principal: Principal | None) -> Product:
    if product is None or (not product.is_active and not (principal and principal.is_admin)):
        raise NotFound("no such product")
    return product


async def get_product(conn: repo.Executor, product_id: int, principal: Principal | None) -> Product:
    return _visible(await repo.get_product(conn, product_id), principal)


async def batch_get_products(
    conn: repo.Executor, product_ids: list[int], principal: Principal | None
) -> tuple[list[Product], list[int]]:
    """Found products in the order asked (each once), and the ids not found or not visible."""
    if len(product_ids) > MAX_BATCH_IDS:
        raise BadRequest(f"at most {MAX_BATCH_IDS} ids per batch")
    wanted = list(dict.fromkeys(product_ids))
    valid = [i for i in wanted if 1 <= i <= INT64_MAX]
    admin = principal is not None and principal.is_admin
    found = {p.id: p for p in await repo.get_products(conn, valid) if p.is_active or admin}
    return [found[i] for i in wanted if i in found], [i for i in wanted if i not in found]


def _store_currency(currency: str | None, store_currency: str) -> str:
    # One currency per store: the pricing engine prices a cart in one currency.
    if currency is not None and currency != store_currency:
        raise ValidationFailed(
            "unsupported currency",
            errors=[FieldError("currency", f"must be the store currency {store_currency}")],
        )
    return store_currency


async def create_product(ctx: AppContext, data: ProductCreate) -> Product:
    values = msgspec.structs.asdict(data)
    values["currency"] = _store_currency(data.currency, ctx.settings.store_currency)
    # Nothing to retire: no page of it can be cached yet (a 404 is not cached), and lists show
    # it within LIST_CACHE_TTL.
    return await repo.insert_product(ctx.pool, values)


async def update_product(ctx: AppContext, product_id: int, data: ProductUpdate) -> Product:
    changes = changed_fields(data)
    if "currency" in changes:
        _store_currency(changes["currency"], ctx.settings.store_currency)
    product = await repo.update_product(ctx.pool, product_id, changes)
    await product_changed(ctx, product_id)
    return product


async def delete_product(ctx: AppContext, product_id: int) -> None:
    """Soft delete: orders and carts keep referring to it; admins still see it."""
    await repo.update_product(ctx.pool, product_id, {"is_active": False})
    await product_changed(ctx, product_id)


async def adjust_stock(ctx: AppContext, product_id: int, delta: int) -> Product:
    if not -INT32_MAX <= delta <= INT32_MAX:
        raise BadRequest("delta is out of range")
    product = await repo.adjust_stock(ctx.pool, product_id, delta)
    if product is not None:
        await stock_changed(ctx, [product_id])
        return product
    current = await repo.get_product(ctx.pool, product_id)
    if current is None:
        raise NotFound("no such product")
    if current.stock + delta < 0:
        raise Conflict(f"stock cannot go below zero (stock {current.stock}, delta {delta})")
    raise BadRequest("stock would exceed its maximum")


def record_view(ctx: AppContext, product_id: int) -> None:
    """Count one product view for GET /stats/products: an in-memory counter (cheap and
    synchronous on purpose) that the gateway flushes to product_stats periodically."""
    ctx.record_product_view(product_id)


# ---- cached public reads ---------------------------------------------------------------------
# What anonymous callers and customers read (active products only) is served from ctx.cache as
# ready JSON, in two namespaces with different freshness:
# - product pages (PRODUCTS, `id:<n>`, long TTL) are exact: every write that changes a product
#   or its stock retires that product's key after it commits (stock_changed / product_changed;
#   checkout and cancellation call stock_changed for the products they moved), so the next read
#   in this process is fresh and other processes follow within the cache's local bound (1 s);
# - list and search pages (PRODUCT_LISTS, LIST_CACHE_TTL) are a view at most that old: neither
#   stock moves nor admin product writes retire them (with one back-office user editing every
#   few seconds, retiring every list page on each edit cost the full shop mix a third of its
#   list hits). A new, repriced or withdrawn product shows in shoppers' lists within the TTL;
#   its product page, the cart and checkout are exact at once (a withdrawn product still
#   listed answers 404 on its page and cannot be bought). Category writes, which change what a
#   `category=` filter means and are rare, do retire them.
# Admins read PostgreSQL directly: they see inactive products and their own changes at once.

PRODUCT_CACHE_TTL = 300.0
LIST_CACHE_TTL = 30.0


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


async def public_product(ctx: AppContext, product_id: int) -> tuple[str, bytes]:
    """(ETag, JSON) of an active product as anyone but an admin sees it; NotFound otherwise."""

    async def load() -> bytes:
        product = await get_product(ctx.pool, product_id, None)
        return etag(product).encode() + b"\n" + msgspec.json.encode(product)

    entry = await ctx.cache.get_or_compute(
        PRODUCTS, product_key(product_id), PRODUCT_CACHE_TTL, load
    )
    tag, _, body = entry.partition(b"\n")
    return tag.decode(), body


def public_product_replay(ctx: AppContext, product_id: int) -> dict[str, Any]:
    """Terms to replay an anonymous product answer without its handler (see
    Cache.replay_terms); every replay is a view too."""
    return ctx.cache.replay_terms(
        PRODUCTS, on_replay=lambda: record_view(ctx, product_id), key=product_key(product_id)
    )


async def public_product_page(ctx: AppContext, query: ProductQuery) -> bytes:
    """A page of GET /products as JSON, as anyone but an admin sees it."""
    canonical = msgspec.json.encode(query)
    key = "list:" + hashlib.blake2b(canonical, digest_size=16).hexdigest()

    async def load() -> bytes:
        return msgspec.json.encode(await list_products(ctx.pool, query, None))

    return await ctx.cache.get_or_compute(PRODUCT_LISTS, key, LIST_CACHE_TTL, load)


# ---- listing ---------------------------------------------------------------------------------


def encode_cursor(sort: str, product: Product) -> str:
    key: object
    if repo.SORT_ORDERS[sort].column == "created_at":
        key = int((product.created_at - _EPOCH) / timedelta(microseconds=1))
    else:
        key = getattr(product, repo.SORT_ORDERS[sort].column)
    raw = msgspec.json.encode([sort, key, product.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_KEY_TYPES: dict[str, type] = {"price": int, "created_at": int, "name": str}


def decode_cursor(cursor: str, sort: str) -> tuple[object, int]:
    invalid = BadRequest(
        "invalid cursor",
        errors=[FieldError("cursor", "not a cursor of this list; start again without one")],
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, key, last_id = msgspec.json.decode(raw, type=tuple[str, int | str, int])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise invalid from None
    column = repo.SORT_ORDERS[sort].column
    if made_for != sort or not isinstance(key, _CURSOR_KEY_TYPES[column]):
        raise invalid
    if not 0 <= last_id <= INT64_MAX:
        raise invalid
    if column == "created_at":
        assert isinstance(key, int)
        try:
            return _EPOCH + timedelta(microseconds=key), last_id
        except OverflowError:
            raise invalid from None
    if isinstance(key, int) and not -INT64_MAX <= key <= INT64_MAX:
        raise invalid
    if isinstance(key, str) and "\x00" in key:
        raise invalid
    return key, last_id


def _bad_parameter(name: str, message: str) -> BadRequest:
    return BadRequest(f"invalid query parameter {name!r}", errors=[FieldError(name, message)])


def _product_filter(query: ProductQuery, principal: Principal | None) -> ProductFilter:
    for name in ("category", "q"):
        value = getattr(query, name)
        if value is not None and ("\x00" in value or len(value) > 200):
            raise _bad_parameter(name, "at most 200 characters, no NUL")
    for name in ("min_price", "max_price"):
        value = getattr(query, name)
        if value is not None and not 0 <= value <= INT64_MAX:
            raise _bad_parameter(name, "must be a non-negative integer (minor units)")
    category_id, category_slug = None, None
    if query.category:
        if query.category.isascii() and query.category.isdigit():
            category_id = int(query.category)
            if category_id > INT64_MAX:
                raise _bad_parameter("category", "no such id")
        else:
            category_slug = query.category
    return ProductFilter(
        category_id=category_id,
        category_slug=category_slug,
        query=(query.q or "").strip() or None,
        min_price=query.min_price,
        max_price=query.max_price,
        in_stock=query.in_stock,
        include_inactive=principal is not None and principal.is_admin,
    )


async def list_products(
    conn: repo.Executor, query: ProductQuery, principal: Principal | None
) -> ProductPage:
    sort = query.sort or DEFAULT_SORT
    if sort not in repo.SORT_ORDERS:
        raise _bad_parameter("sort", "one of " + ", ".join(SORTS))
    limit = DEFAULT_LIMIT if query.limit is None else query.limit
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad_parameter("limit", f"between 1 and {MAX_LIMIT}")
    after = decode_cursor(query.cursor, sort) if query.cursor else None
    filters = _product_filter(query, principal)
    rows = await repo.list_products(conn, filters, sort, after, limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor(sort, page[-1]) if len(rows) > limit else None
    return ProductPage(page, next_cursor)
