"""Variants repository: a product's sellable SKUs, each with its own stock and optional price.

Variant stock is the stock: products.stock is their sum over active variants, kept by a trigger
(0003_variants_payments.sql). Every function that takes or gives back units locks variant rows
one at a time in ascending variant id; all stock writers (checkout, cancel, expiry, refund
restock, admin adjustments) follow that one order, so they may wait on each other but never
deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from server.db import sql
from server.domain.errors import AlreadyExists, Conflict

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class Variant(msgspec.Struct, frozen=True):
    """A variant as the product body shows it; `price` is what it sells for (its own price, or
    the product's when it has none)."""

    id: int
    sku: str
    options: dict[str, str]
    price: int
    stock: int
    is_active: bool


class VariantRecord(msgspec.Struct, frozen=True):
    """A variant with what a cart line or an order line needs of its product."""

    id: int
    product_id: int
    sku: str
    options: dict[str, str]
    own_price: int | None
    price: int
    stock: int
    is_active: bool
    product_active: bool
    product_name: str
    category_id: int | None
    product_options: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime

    @property
    def sellable(self) -> bool:
        return self.is_active and self.product_active


_VARIANT_JOIN = """
    SELECT v.id, v.product_id, v.sku, v.options, v.price AS own_price,
           coalesce(v.price, p.price) AS price, v.stock, v.is_active,
           p.is_active AS product_active, p.name AS product_name, p.category_id,
           p.options AS product_options, v.created_at, v.updated_at
      FROM product_variants v JOIN products p ON p.id = v.product_id"""


def _record(row: asyncpg.Record) -> VariantRecord:
    return VariantRecord(**dict(row))


def _overflow() -> Conflict:
    return Conflict("the product's total stock would exceed 2147483647")


async def variants_of(
    conn: Executor, product_ids: Sequence[int], *, include_inactive: bool
) -> dict[int, list[Variant]]:
    """The variants of each product (ascending id): one query for a whole page of products."""
    rows = await conn.fetch(
        """SELECT v.product_id, v.id, v.sku, v.options, coalesce(v.price, p.price) AS price,
                  v.stock, v.is_active
             FROM product_variants v JOIN products p ON p.id = v.product_id
            WHERE v.product_id = ANY($1::bigint[]) AND (v.is_active OR $2)
            ORDER BY v.product_id, v.id""",
        list(product_ids),
        include_inactive,
    )
    found: dict[int, list[Variant]] = {}
    for r in rows:
        found.setdefault(r["product_id"], []).append(
            Variant(r["id"], r["sku"], r["options"], r["price"], r["stock"], r["is_active"])
        )
    return found


async def get_variant(conn: Executor, variant_id: int) -> VariantRecord | None:
    row = await conn.fetchrow(f"{_VARIANT_JOIN} WHERE v.id = $1", variant_id)
    return _record(row) if row else None


async def get_variants(conn: Executor, variant_ids: Sequence[int]) -> dict[int, VariantRecord]:
    rows = await conn.fetch(f"{_VARIANT_JOIN} WHERE v.id = ANY($1::bigint[])", list(variant_ids))
    return {r["id"]: _record(r) for r in rows}


async def product_variants(conn: Executor, product_id: int) -> list[VariantRecord]:
    rows = await conn.fetch(f"{_VARIANT_JOIN} WHERE v.product_id = $1 ORDER BY v.id", product_id)
    return [_record(r) for r in rows]


async def candidates(
    conn: Executor, product_ids: Sequence[int], variant_ids: Sequence[int]
) -> list[VariantRecord]:
    """Every variant of these products, and these variants: what choosing a line's variant
    needs, in one query."""
    rows = await conn.fetch(
        f"""{_VARIANT_JOIN}
            WHERE v.product_id = ANY($1::bigint[]) OR v.id = ANY($2::bigint[])
            ORDER BY v.id""",
        list(product_ids),
        list(variant_ids),
    )
    return [_record(r) for r in rows]


async def find_by_options(
    conn: Executor, product_id: int, options: dict[str, str]
) -> VariantRecord | None:
    row = await conn.fetchrow(
        f"{_VARIANT_JOIN} WHERE v.product_id = $1 AND v.options = $2::jsonb", product_id, options
    )
    return _record(row) if row else None


def _write_error(exc: asyncpg.PostgresError) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        if exc.constraint_name == "product_variants_options_key":
            return AlreadyExists("the product already has a variant with these options")
        return AlreadyExists("a variant with this sku already exists")
    if isinstance(exc, asyncpg.NumericValueOutOfRangeError):
        return _overflow()
    return exc


async def insert_variant(conn: Executor, product_id: int, values: dict[str, Any]) -> VariantRecord:
    names = ["product_id", *values]
    try:
        row = await conn.fetchrow(
            f"INSERT INTO product_variants {sql.insert_columns(names)} RETURNING id",
            product_id,
            *values.values(),
        )
    except (asyncpg.UniqueViolationError, asyncpg.NumericValueOutOfRangeError) as exc:
        raise _write_error(exc) from None
    assert row is not None
    found = await get_variant(conn, row["id"])
    assert found is not None
    return found


async def update_variant(
    conn: Executor, variant_id: int, changes: dict[str, Any]
) -> VariantRecord | None:
    if changes:
        assignments = sql.assignments(list(changes), extra=["updated_at = now()"])
        try:
            status = await conn.execute(
                f"UPDATE product_variants SET {assignments} WHERE id = $1",
                variant_id,
                *changes.values(),
            )
        except (asyncpg.UniqueViolationError, asyncpg.NumericValueOutOfRangeError) as exc:
            raise _write_error(exc) from None
        if status.endswith(" 0"):
            return None
    return await get_variant(conn, variant_id)


async def adjust_stock(conn: Executor, variant_id: int, delta: int) -> VariantRecord | None:
    """Add `delta`; None when the variant is unknown or its stock would leave 0..2^31-1 (the
    check runs in bigint, so it cannot overflow itself)."""
    try:
        row = await conn.fetchrow(
            """UPDATE product_variants SET stock = stock + $2::integer, updated_at = now()
                WHERE id = $1 AND stock::bigint + $2::bigint BETWEEN 0 AND 2147483647
            RETURNING id""",
            variant_id,
            delta,
        )
    except asyncpg.NumericValueOutOfRangeError:
        raise _overflow() from None
    return await get_variant(conn, variant_id) if row else None


class TakenVariant(msgspec.Struct, frozen=True):
    """A variant row right after its units were taken: what the order line snapshots."""

    variant_id: int
    product_id: int
    sku: str
    name: str
    options: dict[str, str]
    category_id: int | None
    price: int
    stock_after: int


# Every stock writer locks variant rows in ascending id (the CTE below, FOR UPDATE after its
# ORDER BY), so two orders naming the same variants in other orders cannot deadlock. The
# UPDATE only touches rows that CTE locked; its conditions are re-checked on each row's latest
# version after any lock wait, so two checkouts racing for the last unit cannot both succeed.
_LOCK_IN_ORDER = """locked AS MATERIALIZED (
        SELECT id FROM product_variants WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE)"""


async def take_stock(
    conn: asyncpg.Connection, quantities: Sequence[tuple[int, int]]
) -> list[TakenVariant]:
    """Take each (variant_id, quantity) line's units from sellable variants that have them, in
    one statement; returns the lines taken, in ascending variant id. A line missing from the
    result was short or not for sale, and nothing was taken for it (the caller's transaction
    is then rolled back)."""
    variant_ids = [v for v, _ in quantities]
    rows = await conn.fetch(
        f"""WITH {_LOCK_IN_ORDER}
        UPDATE product_variants v SET stock = v.stock - t.q, updated_at = now()
          FROM unnest($1::bigint[], $2::int[]) AS t(id, q), locked, products p
         WHERE v.id = t.id AND locked.id = t.id AND p.id = v.product_id
           AND v.is_active AND p.is_active AND v.stock >= t.q
        RETURNING v.id, v.product_id, v.sku, p.name, v.options, p.category_id,
                  coalesce(v.price, p.price) AS price, v.stock""",
        variant_ids,
        [q for _, q in quantities],
    )
    taken = [
        TakenVariant(
            row["id"],
            row["product_id"],
            row["sku"],
            row["name"],
            row["options"],
            row["category_id"],
            row["price"],
            row["stock"],
        )
        for row in rows
    ]
    taken.sort(key=lambda t: t.variant_id)
    return taken


class StockLevel(msgspec.Struct, frozen=True):
    product_id: int
    variant_id: int
    stock: int


async def restock(conn: asyncpg.Connection, quantities: dict[int, int]) -> list[StockLevel]:
    """Give units back to variants (ascending variant id, like every other stock writer);
    returns their new stock."""
    if not quantities:
        return []
    variant_ids = sorted(quantities)
    try:
        rows = await conn.fetch(
            f"""WITH {_LOCK_IN_ORDER}
            UPDATE product_variants v SET stock = v.stock + t.q, updated_at = now()
              FROM unnest($1::bigint[], $2::int[]) AS t(id, q), locked
             WHERE v.id = t.id AND locked.id = t.id
            RETURNING v.product_id, v.id, v.stock""",
            variant_ids,
            [quantities[v] for v in variant_ids],
        )
    except asyncpg.NumericValueOutOfRangeError:
        raise _overflow() from None
    levels = [StockLevel(row["product_id"], row["id"], row["stock"]) for row in rows]
    levels.sort(key=lambda level: level.variant_id)
    return levels
