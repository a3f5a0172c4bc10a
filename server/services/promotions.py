"""Promotion administration: validation of the rules the pricing engine relies on.

- `percent`: `value` 1..100; `fixed`: `value` ≥ 1 minor unit; neither takes buy/get quantities.
- `buy_x_get_y`: `buy_quantity` and `get_quantity` required, `value` unused (must be 0).
- `ends_at` after `starts_at`; `usage_limit` never below `times_used`.
- Codes are unique ignoring case (409); a PATCH is validated on the merged result.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

import asyncpg
import msgspec

from server.db import promotions as repo
from server.db.promotions import Promotion
from server.domain.errors import BadRequest, FieldError, NotFound, ValidationFailed
from server.domain.values import END, INT32_MAX, INT64_MAX, MAX_PRICE, Money, Quantity
from server.services.catalog import changed_fields

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

Code = Annotated[
    str,
    msgspec.Meta(
        pattern="^[A-Za-z0-9_-]{1,64}" + END,
        description="letters, digits, '-' and '_'; case-insensitive",
    ),
]
Kind = Literal["percent", "fixed", "buy_x_get_y"]
Value = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=MAX_PRICE,
        description=(
            "percent: whole percent 1..100; fixed: minor units ≥ 1; buy_x_get_y: unused (0)"
        ),
    ),
]
Ids = Annotated[
    list[Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]], msgspec.Meta(max_length=1000)
]
Instant = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with offset")]
EndInstant = Annotated[
    datetime, msgspec.Meta(tz=True, description="RFC 3339 with offset; after starts_at")
]
UsageLimit = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]


def _per_kind_rules(*, creating: bool) -> list[dict[str, Any]]:
    """JSON Schema of `_validated`'s rules per kind (an `anyOf` list, one branch per kind)."""
    no_units = {"buy_quantity": {"type": "null"}, "get_quantity": {"type": "null"}}
    units = {"buy_quantity": {"type": "integer"}, "get_quantity": {"type": "integer"}}
    branches = [
        (["value"], {"kind": {"const": "percent"}, "value": {"minimum": 1, "maximum": 100}}),
        (["value"], {"kind": {"const": "fixed"}, "value": {"minimum": 1}}),
        (
            ["buy_quantity", "get_quantity"],
            {"kind": {"const": "buy_x_get_y"}, "value": {"const": 0}},
        ),
    ]
    return [
        {
            "required": ["kind", *required] if creating else ["kind"],
            "properties": {**properties, **(units if "buy_quantity" in required else no_units)},
        }
        for required, properties in branches
    ]


class PromotionCreate(msgspec.Struct, forbid_unknown_fields=True):
    code: Code
    kind: Kind
    value: Value = 0
    buy_quantity: Quantity | None = None
    get_quantity: Quantity | None = None
    min_subtotal: Money = 0
    product_ids: Ids | None = None
    category_ids: Ids | None = None
    starts_at: Instant | None = None
    ends_at: EndInstant | None = None
    usage_limit: UsageLimit | None = None

    # `_validated`'s per-kind rules, for the document. `ends_at` after `starts_at` cannot be
    # said in JSON Schema; it is in the field's description.
    json_schema_rules: ClassVar[dict[str, Any]] = {"anyOf": _per_kind_rules(creating=True)}


class PromotionUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; null clears an optional field."""

    code: Code | msgspec.UnsetType = msgspec.UNSET
    kind: Kind | msgspec.UnsetType = msgspec.UNSET
    value: Value | msgspec.UnsetType = msgspec.UNSET
    buy_quantity: Quantity | msgspec.UnsetType | None = msgspec.UNSET
    get_quantity: Quantity | msgspec.UnsetType | None = msgspec.UNSET
    min_subtotal: Money | msgspec.UnsetType = msgspec.UNSET
    product_ids: Ids | msgspec.UnsetType | None = msgspec.UNSET
    category_ids: Ids | msgspec.UnsetType | None = msgspec.UNSET
    starts_at: Instant | msgspec.UnsetType | None = msgspec.UNSET
    ends_at: EndInstant | msgspec.UnsetType | None = msgspec.UNSET
    usage_limit: UsageLimit | msgspec.UnsetType | None = msgspec.UNSET

    # The per-kind rules, for the fields the body carries; the merged result is checked again
    # against the stored promotion (a 422 the schema cannot foresee).
    json_schema_rules: ClassVar[dict[str, Any]] = {
        "anyOf": [{"not": {"required": ["kind"]}}, *_per_kind_rules(creating=False)]
    }


class PromotionPage(msgspec.Struct):
    items: list[Promotion]
    next_cursor: str | None


def _utc(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationFailed("invalid date", errors=[FieldError(name, "out of range")]) from None


def _validated(values: dict[str, Any]) -> dict[str, Any]:
    """Check a complete promotion (new, or existing merged with a PATCH)."""
    problems: list[FieldError] = []
    kind, value = values["kind"], values["value"]
    if kind == "percent" and not 1 <= value <= 100:
        problems.append(FieldError("value", "a percent promotion takes 1..100"))
    if kind == "fixed" and value < 1:
        problems.append(FieldError("value", "a fixed promotion takes at least 1 minor unit"))
    if kind == "buy_x_get_y":
        for name in ("buy_quantity", "get_quantity"):
            if values[name] is None:
                problems.append(FieldError(name, "required for buy_x_get_y"))
        if value != 0:
            problems.append(FieldError("value", "unused by buy_x_get_y; leave it 0"))
    else:
        for name in ("buy_quantity", "get_quantity"):
            if values[name] is not None:
                problems.append(FieldError(name, "only for buy_x_get_y"))
    starts, ends = _utc("starts_at", values["starts_at"]), _utc("ends_at", values["ends_at"])
    if starts is not None and ends is not None and ends <= starts:
        problems.append(FieldError("ends_at", "must be after starts_at"))
    limit = values["usage_limit"]
    if limit is not None and limit < values.get("times_used", 0):
        problems.append(FieldError("usage_limit", "below the number of times already used"))
    if problems:
        raise ValidationFailed("the promotion is invalid", errors=problems)
    return {**values, "starts_at": starts, "ends_at": ends}


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        last_id = int(text) if text.isascii() and text.isdigit() else -1
    except (binascii.Error, ValueError):
        last_id = -1
    if not 0 <= last_id <= INT64_MAX:
        raise BadRequest(
            "invalid cursor", errors=[FieldError("cursor", "not a cursor of this list")]
        )
    return last_id


async def list_promotions(
    conn: repo.PoolOrConnection, limit: int | None, cursor: str | None
) -> PromotionPage:
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(
            "invalid query parameter 'limit'",
            errors=[FieldError("limit", f"between 1 and {MAX_LIMIT}")],
        )
    after = _decode_cursor(cursor) if cursor else None
    rows = await repo.list_promotions(conn, after, limit + 1)
    page = rows[:limit]
    return PromotionPage(page, _encode_cursor(page[-1].id) if len(rows) > limit else None)


async def create_promotion(conn: repo.PoolOrConnection, data: PromotionCreate) -> Promotion:
    values = _validated(msgspec.structs.asdict(data))
    return await repo.insert_promotion(conn, values)


async def update_promotion(
    pool: asyncpg.Pool, promotion_id: int, data: PromotionUpdate
) -> Promotion:
    changes = changed_fields(data)
    async with pool.acquire() as conn, conn.transaction():
        current = await repo.get_for_update(conn, promotion_id)
        if current is None:
            raise NotFound("no such promotion")
        merged = _validated({**msgspec.structs.asdict(current), **changes})
        if not changes:
            return current
        return await repo.update_promotion(
            conn, promotion_id, {name: merged[name] for name in changes}
        )


async def delete_promotion(conn: repo.PoolOrConnection, promotion_id: int) -> None:
    """Carts holding the code keep it attached but unpriced; orders keep their copy of it."""
    await repo.delete_promotion(conn, promotion_id)
