"""Catalog repository: categories (a tree through parent_id) and products.

Product lists use keyset pagination over the index of each sort order (0001_schema.sql, and
0002_list_indexes.sql for one category in each order):
`WHERE (key, id) > ($k, $id) ORDER BY key, id LIMIT n+1` — no OFFSET, no COUNT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from server.db import sql
from server.domain.errors import AlreadyExists, FieldError, NotFound, ValidationFailed

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class Category(msgspec.Struct, frozen=True):
    id: int
    name: str
    slug: str
    parent_id: int | None


class Product(msgspec.Struct, frozen=True):
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


_CATEGORY_COLUMNS = "id, name, slug, parent_id"
PRODUCT_COLUMNS = (
    "id, sku, name, description, category_id, price, currency, stock, is_active, created_at, "
    "updated_at"
)


def _category(row: asyncpg.Record) -> Category:
    return Category(**dict(row))


def product_from_row(row: asyncpg.Record) -> Product:
    return Product(**dict(row))


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


async def get_product(conn: Executor, product_id: int) -> Product | None:
    row = await conn.fetchrow(f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1", product_id)
    return product_from_row(row) if row else None


async def get_products(conn: Executor, product_ids: Sequence[int]) -> list[Product]:
    rows = await conn.fetch(
        f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ANY($1::bigint[])", list(product_ids)
    )
    return [product_from_row(r) for r in rows]


def _product_write_error(exc: asyncpg.PostgresError) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return AlreadyExists("a product with this sku already exists")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return ValidationFailed(
            "the category does not exist", errors=[FieldError("category_id", "no such category")]
        )
    return exc


async def insert_product(conn: Executor, values: dict[str, Any]) -> Product:
    names = list(values)
    try:
        row = await conn.fetchrow(
            f"INSERT INTO products {sql.insert_columns(names)} RETURNING {PRODUCT_COLUMNS}",
            *values.values(),
        )
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _product_write_error(exc) from None
    assert row is not None
    return product_from_row(row)


async def update_product(conn: Executor, product_id: int, changes: dict[str, Any]) -> Product:
    names = list(changes)
    # updated_at moves with every change: it is what the ETag is made of.
    assignments = sql.assignments(names, extra=["updated_at = now()"])
    try:
        row = await conn.fetchrow(
            f"UPDATE products SET {assignments} WHERE id = $1 RETURNING {PRODUCT_COLUMNS}",
            product_id,
            *changes.values(),
        )
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _product_write_error(exc) from None
    if row is None:
        raise NotFound("no such product")
    return product_from_row(row)


async def adjust_stock(conn: Executor, product_id: int, delta: int) -> Product | None:
    """Add `delta` to the stock; None when the product is unknown or the stock would leave
    0..2^31-1 (the check runs in bigint, so it cannot overflow itself)."""
    row = await conn.fetchrow(
        f"""UPDATE products SET stock = stock + $2::integer, updated_at = now()
             WHERE id = $1 AND stock::bigint + $2::bigint BETWEEN 0 AND 2147483647
         RETURNING {PRODUCT_COLUMNS}""",
        product_id,
        delta,
    )
    return product_from_row(row) if row else None


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
    include_inactive: bool = False


class _Params:
    """Collects positional parameters and hands out their `$n` placeholders."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def build_list_query(
    filters: ProductFilter, sort: str, after: tuple[object, int] | None, limit: int
) -> tuple[str, list[object]]:
    """The SQL and `$n` arguments of a product list: up to `limit` products after the keyset
    position `after` (sort key, id). Pure, so tests can EXPLAIN exactly what list_products runs
    (tests/integration/test_list_plans.py).

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
    if filters.in_stock:
        where.append("p.stock > 0")
    if after is not None:
        comparison = "<" if order.descending else ">"
        key, last_id = after
        where.append(
            f"(p.{order.column}, p.id) {comparison} ({params.add(key)}, {params.add(last_id)})"
        )
    direction = "DESC" if order.descending else "ASC"
    order_by = f"ORDER BY p.{order.column} {direction}, p.id {direction}"
    page = params.add(limit)
    columns = ", ".join("p." + c for c in PRODUCT_COLUMNS.split(", "))
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    query = f"SELECT {columns} FROM products p {condition} {order_by} LIMIT {page}"
    if tree and not per_category:
        query = tree + query
    elif tree:
        query = (
            f"{tree}SELECT {columns} FROM tree CROSS JOIN LATERAL ({query}) p "
            f"{order_by} LIMIT {page}"
        )
    return query, params.values


async def list_products(
    conn: Executor, filters: ProductFilter, sort: str, after: tuple[object, int] | None, limit: int
) -> list[Product]:
    """Up to `limit` products after the keyset position `after` (sort key, id)."""
    query, args = build_list_query(filters, sort, after, limit)
    rows = await conn.fetch(query, *args)
    return [product_from_row(r) for r in rows]
