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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

import asyncpg
import msgspec

from server.cache import LIST_ITEMS, PRODUCT_LISTS, PRODUCTS, Freshness
from server.context import AppContext
from server.db import catalog as repo
from server.db import variants as variants_repo
from server.db.catalog import Category, Product, ProductFilter
from server.domain.errors import BadRequest, Conflict, FieldError, NotFound, ValidationFailed
from server.domain.principal import Principal
from server.domain.values import END, INT32_MAX, INT64_MAX, Id, Money, Stock
from server.services import events, variants
from server.services.catalog_cache import (
    catalog_changed,
    lists_changed,
    product_changed,
    product_key,
    stock_changed,
)
from server.services.stock_alerts import alert_if_low
from server.services.variants import OptionSpecs, VariantCreate

MAX_BATCH_IDS = 500
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
DEFAULT_SORT = "-created"
SORTS = tuple(repo.SORT_ORDERS)

# PostgreSQL text cannot hold NUL; rejecting it at the edge keeps it a 422, never a 500.
NO_NUL = "^[^\x00]*$"
SLUG_PATTERN = "^[a-z0-9]+(-[a-z0-9]+)*" + END

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
Currency = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Z]{3}" + END,
        description="ISO 4217; must be the store currency",
        # server/openapi.py (STORE_CURRENCY) writes the configured store currency here.
        extra_json_schema={"x-store-currency": True},
    ),
]


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
    """Without `variants`, the product is one variant with the product's sku and `stock`. With
    them, `stock` is per variant (and absent here), and each variant gives one value of each
    of `options`."""

    sku: Sku
    name: ProductName
    price: Money
    stock: Stock | msgspec.UnsetType = msgspec.UNSET
    description: Description = ""
    category_id: Id | None = None
    currency: Currency | None = None
    is_active: bool = True
    options: OptionSpecs = []
    variants: (
        Annotated[list[VariantCreate], msgspec.Meta(min_length=1, max_length=variants.MAX_VARIANTS)]
        | msgspec.UnsetType
    ) = msgspec.UNSET

    json_schema_rules: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"required": ["stock"], "not": {"required": ["variants"]}},
            {"required": ["variants"], "not": {"required": ["stock"]}},
        ]
    }


class ProductUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; `category_id: null` removes the category."""

    sku: Sku | msgspec.UnsetType = msgspec.UNSET
    name: ProductName | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    category_id: Id | msgspec.UnsetType | None = msgspec.UNSET
    price: Money | msgspec.UnsetType = msgspec.UNSET
    currency: Currency | msgspec.UnsetType = msgspec.UNSET
    # Only for a product with one variant (it sets that variant's stock); 422 otherwise.
    stock: Stock | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET
    # Every existing variant must still give one value of each option (422 otherwise).
    options: OptionSpecs | msgspec.UnsetType = msgspec.UNSET


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
    # `option=size:M` (repeatable): some active variant has all these option values.
    option: tuple[str, ...] = ()
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
    """Strong validator: a digest of the representation, so it changes exactly when the body
    does (a variant's stock moves at checkout without touching the product row)."""
    return '"' + hashlib.blake2b(msgspec.json.encode(product), digest_size=12).hexdigest() + '"'


def _visible(product: Product | None, principal: Principal | None) -> Product:
    if product is None or (not product.is_active and not (principal and principal.is_admin)):
        raise NotFound("no such product")
    return product


def _is_admin(principal: Principal | None) -> bool:
    return principal is not None and principal.is_admin


async def get_product(conn: repo.Executor, product_id: int, principal: Principal | None) -> Product:
    product = await repo.get_product(conn, product_id, include_inactive=_is_admin(principal))
    return _visible(product, principal)


async def batch_get_products(
    conn: repo.Executor, product_ids: list[int], principal: Principal | None
) -> tuple[list[Product], list[int]]:
    """Found products in the order asked (each once), and the ids not found or not visible."""
    wanted, valid = _batch_ids(product_ids)
    admin = _is_admin(principal)
    rows = await repo.get_products(conn, valid, include_inactive=admin)
    found = {p.id: p for p in rows if p.is_active or admin}
    return [found[i] for i in wanted if i in found], [i for i in wanted if i not in found]


def _batch_ids(product_ids: list[int]) -> tuple[list[int], list[int]]:
    """The ids asked, each once in order, and those of them that can be ids at all."""
    if len(product_ids) > MAX_BATCH_IDS:
        raise BadRequest(f"at most {MAX_BATCH_IDS} ids per batch")
    wanted = list(dict.fromkeys(product_ids))
    return wanted, [i for i in wanted if 1 <= i <= INT64_MAX]


def _store_currency(currency: str | None, store_currency: str) -> str:
    # One currency per store: the pricing engine prices a cart in one currency.
    if currency is not None and currency != store_currency:
        raise ValidationFailed(
            "unsupported currency",
            errors=[FieldError("currency", f"must be the store currency {store_currency}")],
        )
    return store_currency


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError(field, message)])


def _planned_variants(data: ProductCreate) -> list[VariantCreate]:
    options = variants.checked_options(data.options)
    if data.variants is msgspec.UNSET:
        if data.stock is msgspec.UNSET:
            raise _invalid("stock", "required unless variants are given")
        if options:
            raise _invalid("variants", "a product with options needs its variants")
        return [VariantCreate(sku=data.sku, stock=data.stock)]
    if data.stock is not msgspec.UNSET:
        raise _invalid("stock", "with variants, stock is given per variant")
    for index, variant in enumerate(data.variants):
        variants.check_selection(options, variant.options, f"variants[{index}].options")
    return data.variants


async def create_product(ctx: AppContext, data: ProductCreate) -> Product:
    planned = _planned_variants(data)
    values = msgspec.structs.asdict(data)
    del values["stock"], values["variants"]
    values["currency"] = _store_currency(data.currency, ctx.settings.store_currency)
    values["options"] = msgspec.to_builtins(variants.checked_options(data.options))
    # Nothing to retire: no page of it can be cached yet (a 404 is not cached), and lists show
    # it within LIST_CACHE_TTL.
    async with ctx.pool.acquire() as conn, conn.transaction():
        product_id = await repo.insert_product(conn, values)
        for variant in planned:
            await variants_repo.insert_variant(conn, product_id, msgspec.structs.asdict(variant))
        product = await repo.get_product(conn, product_id, include_inactive=True)
    assert product is not None
    return product


async def update_product(ctx: AppContext, product_id: int, data: ProductUpdate) -> Product:
    changes = changed_fields(data)
    if "currency" in changes:
        _store_currency(changes["currency"], ctx.settings.store_currency)
    stock = changes.pop("stock", None)
    mailed = False
    async with events.collecting(ctx), ctx.pool.acquire() as conn, conn.transaction():
        current = await variants_repo.product_variants(conn, product_id)
        if not current and await repo.get_product(conn, product_id) is None:
            raise NotFound("no such product")
        if "options" in changes:
            options = variants.checked_options(changes["options"])
            for variant in current:
                problem = variants.selection_problem(options, variant.options)
                if problem is not None:
                    raise _invalid("options", f"variant {variant.sku!r}: {problem}")
            changes["options"] = msgspec.to_builtins(options)
        if stock is not None:
            if len(current) != 1:
                raise _invalid("stock", "this product has several variants; set each one's stock")
            await variants_repo.update_variant(conn, current[0].id, {"stock": stock})
            changed = await variants_repo.get_variant(conn, current[0].id)
            assert changed is not None
            mailed = await alert_if_low(conn, ctx.settings, changed, current[0].stock)
        if "sku" in changes and len(current) == 1 and not current[0].options:
            # The one variant of a product without options carries the product's sku.
            await variants_repo.update_variant(conn, current[0].id, {"sku": changes["sku"]})
        await repo.update_product(conn, product_id, changes)
        product = await repo.get_product(conn, product_id, include_inactive=True)
        assert product is not None
        await events.announce_product(conn, product)
    await product_changed(ctx, product_id)
    if mailed and ctx.jobs is not None:
        await ctx.jobs.deliver_outbox()
    return product


async def delete_product(ctx: AppContext, product_id: int) -> None:
    """Soft delete: orders and carts keep referring to it; admins still see it."""
    await repo.update_product(ctx.pool, product_id, {"is_active": False})
    await product_changed(ctx, product_id)


async def adjust_stock(
    ctx: AppContext, product_id: int, delta: int, variant_id: int | None = None
) -> Product:
    """Add `delta` to a variant's stock; without `variant_id`, to the product's only variant."""
    if not -INT32_MAX <= delta <= INT32_MAX:
        raise BadRequest("delta is out of range")
    target = await _stock_target(ctx, product_id, variant_id)
    mailed = False
    async with events.collecting(ctx), ctx.pool.acquire() as conn, conn.transaction():
        record = await variants_repo.adjust_stock(conn, target.id, delta)
        if record is not None:
            events.announce(
                events.product_topic(product_id),
                "stock.changed",
                {"product_id": product_id, "variant_id": record.id, "stock": record.stock},
            )
            mailed = await alert_if_low(conn, ctx.settings, record, record.stock - delta)
    if mailed and ctx.jobs is not None:
        await ctx.jobs.deliver_outbox()
    if record is None:
        current = await variants_repo.get_variant(ctx.pool, target.id)
        stock = current.stock if current is not None else 0
        if stock + delta < 0:
            raise Conflict(f"stock cannot go below zero (stock {stock}, delta {delta})")
        raise BadRequest("stock would exceed its maximum")
    await stock_changed(ctx, [product_id])
    product = await repo.get_product(ctx.pool, product_id, include_inactive=True)
    assert product is not None
    return product


async def _stock_target(
    ctx: AppContext, product_id: int, variant_id: int | None
) -> variants_repo.VariantRecord:
    if variant_id is not None:
        record = await variants_repo.get_variant(ctx.pool, variant_id)
        if record is None or record.product_id != product_id:
            raise NotFound("no such variant of this product")
        return record
    current = await variants_repo.product_variants(ctx.pool, product_id)
    if not current:
        raise NotFound("no such product")
    if len(current) != 1:
        raise BadRequest(
            "this product has several variants; name one",
            errors=[FieldError("variant_id", "required for a product with several variants")],
        )
    return current[0]


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
# - list and search pages (PRODUCT_LISTS, LIST_CACHE_TTL) cache only which products a page
#   shows and its next cursor. The items' bodies are those product pages, read at every request
#   (Cache.get_many: local copies, one Redis MGET, one query for the rest), so a listed
#   product's stock, price and variants are as exact as its page; one that was withdrawn since
#   is left out, and so is one that no longer passes the page's price, stock or option filter
#   (such a page shows fewer items than `limit`; its cursor still continues the list). What the
#   view may be late on is membership and order: a new product, a reprice's new place in a
#   price sort or a move to another category shows within LIST_CACHE_TTL, the `max-age` that
#   product pages already allow HTTP caches. Neither stock moves nor admin product writes retire
#   the view (with one back-office user editing every few seconds, retiring every list on each
#   edit cost the full shop mix a third of its list hits). Category writes, which change what a
#   `category=` filter means and are rare, do.
# Admins read PostgreSQL directly: they see inactive products and their own changes at once.

PRODUCT_CACHE_TTL = 300.0
LIST_CACHE_TTL = 60.0


def _page_entry(product: Product) -> bytes:
    """A product page as the cache holds it: its ETag, a newline, its JSON."""
    return etag(product).encode() + b"\n" + msgspec.json.encode(product)


async def public_product(ctx: AppContext, product_id: int) -> tuple[str, bytes]:
    """(ETag, JSON) of an active product as anyone but an admin sees it; NotFound otherwise."""

    async def load() -> bytes:
        return _page_entry(await get_product(ctx.pool, product_id, None))

    entry = await ctx.cache.get_or_compute(
        PRODUCTS, product_key(product_id), PRODUCT_CACHE_TTL, load
    )
    tag, _, body = entry.partition(b"\n")
    return tag.decode(), body


def public_product_freshness(ctx: AppContext, product_id: int) -> Freshness:
    """How long what `public_product` reads next stays current (take it before the read)."""
    return ctx.cache.freshness(PRODUCTS, key=product_key(product_id))


class ListView(msgspec.Struct, array_like=True, frozen=True):
    """What a cached list page holds: the ids it shows, in order, and its next cursor."""

    ids: list[int]
    next_cursor: str | None


_LIST_VIEW = msgspec.json.Decoder(ListView)


async def public_product_page(ctx: AppContext, query: ProductQuery) -> bytes:
    """A page of GET /products as JSON, as anyone but an admin sees it."""
    bodies, next_cursor = await public_listing(ctx, query)
    # ProductPage's JSON, field for field (tests/services/test_catalog_lists.py compares them).
    cursor = msgspec.json.encode(next_cursor)
    return b'{"items":[' + b",".join(bodies) + b'],"next_cursor":' + cursor + b"}"


async def public_listing(ctx: AppContext, query: ProductQuery) -> tuple[list[bytes], str | None]:
    """The product bodies (JSON) of a public list page, in order, and its next cursor."""
    canonical = msgspec.json.encode(query)
    key = "list:" + hashlib.blake2b(canonical, digest_size=16).hexdigest()

    async def load() -> bytes:
        return msgspec.json.encode(await list_product_ids(ctx.pool, query))

    view = _LIST_VIEW.decode(
        await ctx.cache.get_or_compute(PRODUCT_LISTS, key, LIST_CACHE_TTL, load)
    )
    entries = await public_product_entries(ctx, view.ids)
    matches = _still_matches(query)
    bodies = []
    for product_id in view.ids:
        entry = entries.get(product_id)
        if entry is not None:  # else withdrawn since the view was read
            body = _body(entry)
            if matches is None or matches(body):
                bodies.append(body)
    return bodies, view.next_cursor


async def public_product_entries(
    ctx: AppContext, product_ids: list[int], *, counted_as: str = LIST_ITEMS
) -> dict[int, bytes]:
    """The cached page entries (`_page_entry`) of those of `product_ids` that are active."""
    ids = {product_key(product_id): product_id for product_id in product_ids}

    async def load(keys: list[str]) -> dict[str, bytes]:
        found, _ = await batch_get_products(ctx.pool, [ids[key] for key in keys], None)
        return {product_key(p.id): _page_entry(p) for p in found}

    entries = await ctx.cache.get_many(
        PRODUCTS, ids, PRODUCT_CACHE_TTL, load, counted_as=counted_as
    )
    return {ids[key]: entry for key, entry in entries.items()}


# gRPC's product reads for all but admins: the same cached pages as REST's, decoded back into
# Products (a decode costs microseconds; the read it saves is a PostgreSQL round trip). Admins
# read PostgreSQL, as on REST.
_PRODUCT = msgspec.json.Decoder(Product)


def _body(entry: bytes) -> bytes:
    return entry.partition(b"\n")[2]


async def read_public_product(ctx: AppContext, product_id: int) -> Product:
    """`get_product` as anyone but an admin sees it, from the cache."""
    if not 1 <= product_id <= INT64_MAX:
        raise NotFound("no such product")
    _, body = await public_product(ctx, product_id)
    return _PRODUCT.decode(body)


async def read_public_products(
    ctx: AppContext, product_ids: list[int]
) -> tuple[list[Product], list[int]]:
    """`batch_get_products` as anyone but an admin sees it, from the cache."""
    wanted, valid = _batch_ids(product_ids)
    entries = await public_product_entries(ctx, valid, counted_as=PRODUCTS)
    found = [_PRODUCT.decode(_body(entries[i])) for i in wanted if i in entries]
    return found, [i for i in wanted if i not in entries]


async def read_public_page(ctx: AppContext, query: ProductQuery) -> ProductPage:
    """`list_products` as anyone but an admin sees it, from the cache."""
    bodies, next_cursor = await public_listing(ctx, query)
    return ProductPage([_PRODUCT.decode(body) for body in bodies], next_cursor)


class _ListedVariant(msgspec.Struct):
    options: dict[str, str]
    stock: int


class _Listed(msgspec.Struct):
    """The fields of a product body that list filters test (the rest are skipped unread)."""

    price: int
    stock: int
    variants: list[_ListedVariant] = []


_LISTED = msgspec.json.Decoder(_Listed)


def _still_matches(query: ProductQuery) -> Callable[[bytes], bool] | None:
    """A test of a product body against the page's price, stock and option filters, the same
    as the list query's (server/db/catalog.py, build_list_query); None without such filters.
    The query is valid: its view was filled, which validated it."""
    low, high, in_stock = query.min_price, query.max_price, query.in_stock
    options = _option_filter(query.option) or {}
    if low is None and high is None and not in_stock and not options:
        return None

    def matches(body: bytes) -> bool:
        listed = _LISTED.decode(body)
        if (low is not None and listed.price < low) or (high is not None and listed.price > high):
            return False
        if not options:
            return not in_stock or listed.stock > 0
        # Some active variant (a public body lists only those) with all the options.
        return any(
            all(v.options.get(name) == value for name, value in options.items())
            and (not in_stock or v.stock > 0)
            for v in listed.variants
        )

    return matches


# ---- listing ---------------------------------------------------------------------------------


def encode_cursor(sort: str, product: Product) -> str:
    return _cursor(sort, getattr(product, repo.SORT_ORDERS[sort].column), product.id)


def _cursor(sort: str, key: object, product_id: int) -> str:
    """The cursor after the row whose sort key is `key` (a datetime for the created sorts)."""
    if isinstance(key, datetime):
        key = int((key - _EPOCH) / timedelta(microseconds=1))
    raw = msgspec.json.encode([sort, key, product_id])
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
        options=_option_filter(query.option),
        include_inactive=principal is not None and principal.is_admin,
    )


def _option_filter(values: tuple[str, ...]) -> dict[str, str] | None:
    """`("size:M", "colour:red")` → `{"size": "M", "colour": "red"}`."""
    if not values:
        return None
    selection: dict[str, str] = {}
    for value in values:
        name, colon, wanted = value.partition(":")
        if not colon or not name or not wanted or "\x00" in value or len(value) > 200:
            raise _bad_parameter("option", "name:value, e.g. size:M (at most 200 characters)")
        if selection.get(name, wanted) != wanted:
            raise _bad_parameter("option", f"two values for the option {name!r}")
        selection[name] = wanted
    if len(selection) > variants.MAX_OPTIONS:
        raise _bad_parameter("option", f"at most {variants.MAX_OPTIONS} options")
    return selection


@dataclass(frozen=True, slots=True)
class _ListPlan:
    sort: str
    limit: int
    after: tuple[object, int] | None
    filters: ProductFilter


def _list_plan(query: ProductQuery, principal: Principal | None) -> _ListPlan:
    sort = query.sort or DEFAULT_SORT
    if sort not in repo.SORT_ORDERS:
        raise _bad_parameter("sort", "one of " + ", ".join(SORTS))
    limit = DEFAULT_LIMIT if query.limit is None else query.limit
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad_parameter("limit", f"between 1 and {MAX_LIMIT}")
    after = decode_cursor(query.cursor, sort) if query.cursor else None
    return _ListPlan(sort, limit, after, _product_filter(query, principal))


async def list_products(
    conn: repo.Executor, query: ProductQuery, principal: Principal | None
) -> ProductPage:
    plan = _list_plan(query, principal)
    rows = await repo.list_products(conn, plan.filters, plan.sort, plan.after, plan.limit + 1)
    page = rows[: plan.limit]
    next_cursor = encode_cursor(plan.sort, page[-1]) if len(rows) > plan.limit else None
    return ProductPage(page, next_cursor)


async def list_product_ids(conn: repo.Executor, query: ProductQuery) -> ListView:
    """The public page `list_products` would give, as ids (one query: no bodies, no variants)."""
    plan = _list_plan(query, None)
    rows = await repo.list_product_keys(conn, plan.filters, plan.sort, plan.after, plan.limit + 1)
    page = rows[: plan.limit]
    next_cursor = _cursor(plan.sort, *page[-1]) if len(rows) > plan.limit else None
    return ListView([product_id for _, product_id in page], next_cursor)
