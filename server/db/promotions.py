"""Promotions repository."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from server.db import sql
from server.domain.errors import AlreadyExists, NotFound, ValidationFailed

PoolOrConnection: TypeAlias = asyncpg.Connection | asyncpg.Pool


class Promotion(msgspec.Struct, frozen=True):
    id: int
    code: str
    kind: str
    value: int
    buy_quantity: int | None
    get_quantity: int | None
    min_subtotal: int
    product_ids: list[int] | None
    category_ids: list[int] | None
    starts_at: datetime | None
    ends_at: datetime | None
    usage_limit: int | None
    times_used: int

    def unusable_reason(self, now: datetime) -> str | None:
        """Why the promotion cannot be used at `now`, or None when it can."""
        if self.starts_at is not None and now < self.starts_at:
            return "this promotion has not started yet"
        if self.ends_at is not None and now >= self.ends_at:
            return "this promotion has expired"
        if self.usage_limit is not None and self.times_used >= self.usage_limit:
            return "this promotion has been used up"
        return None


PROMOTION_COLUMNS = (
    "id, code, kind, value, buy_quantity, get_quantity, min_subtotal, product_ids, category_ids, "
    "starts_at, ends_at, usage_limit, times_used"
)


def promotion_from_row(row: asyncpg.Record) -> Promotion:
    values = dict(row)
    for key in ("product_ids", "category_ids"):
        if values[key] is not None:
            values[key] = list(values[key])
    return Promotion(**values)


async def get_by_code(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> Promotion | None:
    """Codes are case-insensitive."""
    row = await conn.fetchrow(
        f"SELECT {PROMOTION_COLUMNS} FROM promotions WHERE lower(code) = lower($1)", code
    )
    return promotion_from_row(row) if row else None


def _write_error(exc: asyncpg.PostgresError) -> Exception:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return AlreadyExists("a promotion with this code already exists (codes ignore case)")
    # The table's CHECK constraints back the service's validation; should one still fire, it is
    # the caller's data that is wrong.
    return ValidationFailed(f"the promotion is invalid ({getattr(exc, 'constraint_name', '')})")


async def list_promotions(
    conn: asyncpg.Connection | asyncpg.Pool, after_id: int | None, limit: int
) -> list[Promotion]:
    rows = await conn.fetch(
        f"SELECT {PROMOTION_COLUMNS} FROM promotions WHERE id > $1 ORDER BY id LIMIT $2",
        after_id or 0,
        limit,
    )
    return [promotion_from_row(r) for r in rows]


async def get_for_update(conn: asyncpg.Connection, promotion_id: int) -> Promotion | None:
    row = await conn.fetchrow(
        f"SELECT {PROMOTION_COLUMNS} FROM promotions WHERE id = $1 FOR UPDATE", promotion_id
    )
    return promotion_from_row(row) if row else None


async def insert_promotion(
    conn: asyncpg.Connection | asyncpg.Pool, values: dict[str, Any]
) -> Promotion:
    names = list(values)
    try:
        row = await conn.fetchrow(
            f"INSERT INTO promotions {sql.insert_columns(names)} RETURNING {PROMOTION_COLUMNS}",
            *values.values(),
        )
    except (asyncpg.UniqueViolationError, asyncpg.CheckViolationError) as exc:
        raise _write_error(exc) from None
    assert row is not None
    return promotion_from_row(row)


async def update_promotion(
    conn: asyncpg.Connection, promotion_id: int, changes: dict[str, Any]
) -> Promotion:
    names = list(changes)
    assignments = sql.assignments(names)
    try:
        row = await conn.fetchrow(
            f"UPDATE promotions SET {assignments} WHERE id = $1 RETURNING {PROMOTION_COLUMNS}",
            promotion_id,
            *changes.values(),
        )
    except (asyncpg.UniqueViolationError, asyncpg.CheckViolationError) as exc:
        raise _write_error(exc) from None
    if row is None:
        raise NotFound("no such promotion")
    return promotion_from_row(row)


async def delete_promotion(conn: asyncpg.Connection | asyncpg.Pool, promotion_id: int) -> None:
    status = await conn.execute("DELETE FROM promotions WHERE id = $1", promotion_id)
    if status.endswith(" 0"):
        raise NotFound("no such promotion")
