"""Promotions repository."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec


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
        f"SELECT {PROMOTION_COLUMNS} FROM promotions WHERE lower(code) = lower($1)", code)
    return promotion_from_row(row) if row else None
