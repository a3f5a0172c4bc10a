"""Catalog repository: categories (a tree through parent_id) and products.

Product lists use keyset pagination over the index of each sort order (0001_schema.sql, and
0002_list_indexes.sql for one category in each order):
`WHERE (key, id) > ($k, $id) ORDER BY key, id LIMIT n+1` — no OFFSET, no COUNT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from server.db import sql
from server.db.variants import Variant, variants_of
from server.domain.errors import AlreadyExists, FieldError, NotFound, ValidationFailed

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class Category(msgspec.Struct, frozen=True):
    id: int
    name: str
    slug: str
    parent_id: int | None


class ProductOption(msgspec.Struct, frozen=True):
    name: str
    values: list[str]


class Product(msgspec.Struct, frozen=True):
    """A product with its variants. `stock` is the sum over its active variants; `variants`
    lists the active ones (an admin's read lists every one)."""

    id: int
    sku: str
    name: str
    description: str
    category_id: int | None
    price: int
    currency: str
    stock: int
    is_active: bool
    created_at: datetime
    updated_at: datetime
    options: list[ProductOption] = []
    variants: list[Variant] = []


_CATEGORY_COLUMNS = "id, name, slug, parent_id"
PRODUCT_COLUMNS = (
    "id, sku, name, description, category_id, price, currency, is_active, created_at, "
    "updated_at, options"
)

_PRODUCT_COLUMN_NAMES = tuple(PRODUCT_COLUMNS.split(", "))


def _category(row: asyncpg.Record) -> Category:
    return Category(**dict(row))


def _product(row: asyncpg.Record, variants: list[Variant]) -> Product:
    values = dict(row)
    options = [ProductOption(o["name"], o["values"]) for o in values.pop("options")]
    stock = sum(v.stock for v in variants if v.is_active)
    return Product(**values, stock=stock, options=options, variants=variants)


@asynccontextmanager
async def _one_connection(conn: Executor) -> AsyncIterator[asyncpg.Connection]:
    """Run a read of several statements on one connection (one pool checkout)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired:
            yield acquired
    else:
        yield conn


async def with_variants(
    conn: Executor, rows: Sequence[asyncpg.Record], *, include_inactive: bool
) -> list[Product]:
    """Products of `rows` with their variants, fetched in one query for all of them."""
    if not rows:
        return []
    found = await variants_of(conn, [r["id"] for r in rows], include_inactive=include_inactive)
    return [_product(r, found.get(r["id"], [])) for r in rows]


# ---- categories ------------------------------------------------------------------------------


async def list_categories(conn: Executor) -> list[Category]:
    rows = await conn.fetch(f"SELECT {_CATEGORY_COLUMNS} FROM categories ORDER BY id")
    return [_category(r) for r in rows]


async def get_category(conn: Executor, category_id: int) -> Category:
    row = await conn.fetchrow(
        f"SELECT {_CATEGORY_COLUMNS} FROM categories WHERE id = $1", category_id
    )
    if row is None:
        raise NotFound("no such category")
    return _category(row)


def _parent_missing() -> ValidationFailed:
    return ValidationFailed(
        "the parent category does not exist", errors=[FieldError("parent_id", "no such category")]
    )


async def insert_category(conn: Executor, name: str, slug: str, parent_id: int | None) -> Category:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO categories (name, slug, parent_id) VALUES ($1, $2, $3) "
            f"RETURNING {_CATEGORY_COLUMNS}",
            name,
            slug,
            parent_id,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"the slug {slug!r} is already used by another category") from None
    except asyncpg.ForeignKeyViolationError:
        raise _parent_missing() from None
    assert row is not None
    return _category(row)


async def is_ancestor_or_self(conn: asyncpg.Connection, candidate: int, of: int) -> bool:
    """True when `candidate` is `of` or one of its ancestors (walking parent_id upwards)."""
    found = await conn.fetchval(
        """WITH RECURSIVE up AS (
               SELECT id, parent_id FROM categories WHERE id = $2
               UNION
               SELECT c.id, c.parent_id FROM categories c JOIN up ON c.id = up.parent_id)
           SELECT EXISTS (SELECT 1 FROM up WHERE id = $1)""",
        candidate,
        of,
    )
    return bool(found)


async def lock_category_tree(conn: asyncpg.Connection) -> None:
    """Serialise re-parenting, so two concurrent moves cannot close a cycle between them."""
    await conn.execute("LOCK TABLE categories IN SHARE ROW EXCLUSIVE MODE")


async def update_category(
    conn: asyncpg.Connection, category_id: int, changes: dict[str, Any]
) -> Category:
    if not changes:
        return await get_category(conn, category_id)
    names = list(changes)
    assignments = sql.assignments(names)
    try:
        row = await conn.fetchrow(
            f"UPDATE categories SET {assignments} WHERE id = $1 RETURNING {_CATEGORY_COLUMNS}",
            category_id,
            *changes.values(),
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists("this slug is already used by another category") from None
    except asyncpg.ForeignKeyViolationError:
        raise _parent_missing() from None
    if row is None:
        raise NotFound("no such category")
    return _category(row)


async def delete_category(conn: Executor, category_id: int) -> None:
    # Children become roots and products lose their category (ON DELETE SET NULL).
    status = await conn.execute("DELETE FROM categories WHERE id = $1", category_id)
    if status.endswith(" 0"):
        raise NotFound("no such category")


# ---- products --------------------------------------------------------------------------------


async def get_product(
    conn: Executor, product_id: int, *, include_inactive: bool = False
) -> Product | None:
    """The product (active or not) with its variants (inactive ones with `include_inactive`)."""
    async with _one_connection(conn) as one:
        row = await one.fetchrow(
            f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1", product_id
        )
        if row is None:
            return None
        return (await with_variants(one, [row], include_inactive=include_inactive))[0]


async def get_products(
    conn: Executor, product_ids: Sequence[int], *, include_inactive: bool = False
) -> list[Product]:
    async with _one_connection(conn) as one:
        rows = await one.fetch(
            f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ANY($1::bigint[])",
            list(product_ids),
        )
        return await with_variants(one, rows, include_inactive=include_inactive)


async def touch_product(conn: Executor, product_id: int) -> None:
    """A variant changed: the product's updated_at moves with it (its body shows variants)."""
    await conn.execute("UPDATE products SET updated_at = now() WHERE id = $1", product_id)


def _product_write_error(exc: asyncpg.PostgresError) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return AlreadyExists("a product with this sku already exists")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return ValidationFailed(
            "the category does not exist", errors=[FieldError("category_id", "no such category")]
        )
    return exc


async def insert_product(conn: Executor, values: dict[str, Any]) -> int:
    """Insert the product row (its variants are the caller's next step); returns its id."""
    names = list(values)
    try:
        product_id: int = await conn.fetchval(
            f"INSERT INTO products {sql.insert_columns(names)} RETURNING id", *values.values()
        )
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _product_write_error(exc) from None
    return product_id


async def update_product(conn: Executor, product_id: int, changes: dict[str, Any]) -> None:
    names = list(changes)
    # updated_at moves with every change (the product's cached page is keyed on it).
    assignments = sql.assignments(names, extra=["updated_at = now()"])
    try:
        status = await conn.execute(
            f"UPDATE products SET {assignments} WHERE id = $1", product_id, *changes.values()
        )
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _product_write_error(exc) from None
    if status.endswith(" 0"):
        raise NotFound("no such product")


@dataclass(frozen=True, slots=True)
class SortOrder:
    """One `sort=` value: the column it orders by and the direction (id breaks ties)."""

    column: str
    descending: bool


SORT_ORDERS: dict[str, SortOrder] = {
    "price": SortOrder("price", False),
    "-price": SortOrder("price", True),
    "created": SortOrder("created_at", False),
    "-created": SortOrder("created_at", True),
    "name": SortOrder("name", False),
}


@dataclass(frozen=True, slots=True)
class ProductFilter:
    category_id: int | None = None
    category_slug: str | None = None
    query: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool = False
    # {"size": "M"}: some active variant has these option values (and stock, with in_stock).
    options: dict[str, str] | None = None
    include_inactive: bool = False


class _Params:
    """Collects positional parameters and hands out their `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def build_list_query(
    filters: ProductFilter,
    sort: str,
    after: tuple[object, int] | None,
    limit: int,
    *,
    columns: Sequence[str] = _PRODUCT_COLUMN_NAMES,
) -> tuple[str, list[object]]:
    """The SQL and `$n` arguments of a product list: `columns` of up to `limit` products after
    the keyset position `after` (sort key, id). Pure, so tests can EXPLAIN exactly what
    list_products and list_product_keys run (tests/integration/test_list_plans.py).

    Without a category the list walks the index of its sort order (0001_schema.sql). With one,
    the category and its descendants are listed each through its own (category_id, key, id)
    index range (0002_list_indexes.sql), `limit` rows at most per category, and those few rows
    are merged: the cost follows the page size and the number of categories in the tree, never
    the category sizes, which PostgreSQL cannot know here (the tree is only found while the
    statement runs, so a single plan has to suit a category of 100 rows and one of 100 000).
    A text search within a category is the exception: walking each category in sort order and
    testing every row for the words costs ~5x more pages than letting the GIN index find the
    matches and sorting those (measured on the seeded catalog, tests/integration/
    test_list_plans.py), so that shape keeps a plain `category_id IN (tree)`.
    """
    order = SORT_ORDERS[sort]
    params = _Params()
    where: list[str] = []
    tree = ""
    per_category = not filters.query
    if filters.category_id is not None or filters.category_slug is not None:
        # The category and all its descendants; an unknown category simply matches nothing.
        root = (
            f"id = {params.add(filters.category_id)}"
            if filters.category_id is not None
            else f"slug = {params.add(filters.category_slug)}"
        )
        tree = f"""WITH RECURSIVE tree AS (
                       SELECT id FROM categories WHERE {root}
                       UNION
                       SELECT c.id FROM categories c JOIN tree t ON c.parent_id = t.id) """
        where.append(
            "p.category_id = tree.id" if per_category else "p.category_id IN (SELECT id FROM tree)"
        )
    if not filters.include_inactive:
        where.append("p.is_active")
    if filters.query:
        where.append(f"p.search @@ websearch_to_tsquery('simple', {params.add(filters.query)})")
    if filters.min_price is not None:
        where.append(f"p.price >= {params.add(filters.min_price)}")
    if filters.max_price is not None:
        where.append(f"p.price <= {params.add(filters.max_price)}")
    if filters.in_stock or filters.options:
        variant = ["v.product_id = p.id", "v.is_active"]
        if filters.in_stock:
            variant.append("v.stock > 0")
        if filters.options:
            variant.append(f"v.options @> {params.add(filters.options)}::jsonb")
        where.append(f"EXISTS (SELECT 1 FROM product_variants v WHERE {' AND '.join(variant)})")
    if after is not None:
        comparison = "<" if order.descending else ">"
        key, last_id = after
        where.append(
            f"(p.{order.column}, p.id) {comparison} ({params.add(key)}, {params.add(last_id)})"
        )
    direction = "DESC" if order.descending else "ASC"
    order_by = f"ORDER BY p.{order.column} {direction}, p.id {direction}"
    page = params.add(limit)
    selected = ", ".join("p." + c for c in columns)
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    query = f"SELECT {selected} FROM products p {condition} {order_by} LIMIT {page}"
    if tree and not per_category:
        query = tree + query
    elif tree:
        query = (
            f"{tree}SELECT {selected} FROM tree CROSS JOIN LATERAL ({query}) p "
            f"{order_by} LIMIT {page}"
        )
    return query, params.values


async def list_products(
    conn: Executor, filters: ProductFilter, sort: str, after: tuple[object, int] | None, limit: int
) -> list[Product]:
    """Up to `limit` products after the keyset position `after` (sort key, id)."""
    query, args = build_list_query(filters, sort, after, limit)
    async with _one_connection(conn) as one:
        rows = await one.fetch(query, *args)
        return await with_variants(one, rows, include_inactive=filters.include_inactive)


async def list_product_keys(
    conn: Executor, filters: ProductFilter, sort: str, after: tuple[object, int] | None, limit: int
) -> list[tuple[object, int]]:
    """`list_products`' rows as (sort key, id) only: one statement, no bodies or variants."""
    column = SORT_ORDERS[sort].column
    query, args = build_list_query(filters, sort, after, limit, columns=(column, "id"))
    return [(row[0], row[1]) for row in await conn.fetch(query, *args)]
