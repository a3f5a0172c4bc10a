"""Reading orders: one order, and keyset pages of them (customers see only their own)."""

from __future__ import annotations

import base64
import binascii

from server.context import AppContext
from server.db import orders as orders_db
from server.db.orders import OrderRecord
from server.domain.errors import (
    BadRequest,
    FieldError,
    NotFound,
    PermissionDenied,
)
from server.domain.principal import Principal
from server.services.orders.model import (
    DEFAULT_PAGE,
    MAX_PAGE,
    ORDER_STATUSES,
    Order,
    OrderPage,
    order_view,
)

_CURSOR_PREFIX = b"orders:"

# ---- reading ----------------------------------------------------------------------------------


def visible_to(principal: Principal, order: OrderRecord) -> bool:
    """Staff (admin, service) see every order; a customer only their own."""
    return principal.is_staff or order.user_id == principal.user_id


async def get_order(ctx: AppContext, principal: Principal, order_id: int) -> Order:
    order = await orders_db.get_order(ctx.pool, order_id)
    if order is None or not visible_to(principal, order):
        # Someone else's order is indistinguishable from a missing one.
        raise NotFound(f"order {order_id} not found")
    return order_view(order)


def _encode_cursor(order_id: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(order_id).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    digits = raw.removeprefix(_CURSOR_PREFIX)
    if not raw.startswith(_CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 18:
        raise BadRequest(
            "the cursor is invalid; pass back a next_cursor unchanged",
            errors=[FieldError("cursor", "not a cursor of this list")],
        )
    return int(digits)


async def list_orders(
    ctx: AppContext,
    principal: Principal,
    *,
    user_id: int | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> OrderPage:
    """Customers list their own orders; staff all orders, or one user's with `user_id`."""
    # Query-style inputs: a bad one is a malformed request (400), as for every other list.
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(
            "invalid query parameter 'limit'",
            errors=[FieldError("limit", f"between 1 and {MAX_PAGE}")],
        )
    if status is not None and status not in ORDER_STATUSES:
        raise BadRequest(
            "invalid query parameter 'status'",
            errors=[FieldError("status", "one of " + ", ".join(ORDER_STATUSES))],
        )
    if not principal.is_staff:
        if user_id is not None and user_id != principal.user_id:
            raise PermissionDenied("only admins may list other users' orders")
        user_id = principal.user_id
    before_id = _decode_cursor(cursor) if cursor else None
    rows = await orders_db.list_orders(
        ctx.pool, user_id=user_id, status=status, before_id=before_id, limit=limit + 1
    )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return OrderPage([order_view(o) for o in page], next_cursor)
