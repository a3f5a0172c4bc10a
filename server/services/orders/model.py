"""The order as the contract shows it, and the inputs both edges validate alike."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from server.db.orders import OrderRecord
from server.domain.errors import (
    FieldError,
    ValidationFailed,
)
from server.domain.lines import OrderItem
from server.domain.values import Id, Quantity

OrderStatus = Literal["pending", "paid", "shipped", "delivered", "cancelled", "refunded"]
ORDER_STATUSES: tuple[OrderStatus, ...] = (
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
)

MAX_NOTE = 500
MAX_LINES = 100
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_TTL = 24 * 3600
# An in-flight claim older than this belongs to a request that died without releasing it.
IDEMPOTENCY_LEASE = 300
DEFAULT_PAGE = 20
MAX_PAGE = 100


# ---- inputs (also the REST body schemas, so both edges validate alike) ------------------------


class ShippingAddress(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    line1: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    city: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    country: Annotated[str, msgspec.Meta(min_length=2, max_length=100)]
    line2: Annotated[str, msgspec.Meta(max_length=200)] | None = None


Note = Annotated[str, msgspec.Meta(max_length=MAX_NOTE)]


class OrderDetails(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a checkout adds to the goods: where to ship, and a note for the shop."""

    shipping_address: ShippingAddress | None = None
    note: Note | None = None


class OrderLine(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A variant by id, or a product and its option values (or a product with one variant)."""

    quantity: Quantity
    product_id: Id | None = None
    variant_id: Id | None = None
    options: dict[str, str] | None = None


class OrderInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An order of explicit items (gRPC CreateOrder)."""

    items: Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_LINES)]
    promotion_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    shipping_address: ShippingAddress | None = None
    note: Note | None = None


def parse_order_input(data: dict[str, Any]) -> OrderInput:
    """Validate a decoded request against `OrderInput` (422 with the failing field)."""
    try:
        order_input = msgspec.convert(data, OrderInput)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        field = where.rstrip("`").lstrip(".") or "body"
        raise ValidationFailed(
            "the order is invalid", errors=[FieldError(field, message)]
        ) from None
    seen: list[tuple[int | None, int | None, dict[str, str] | None]] = []
    for index, line in enumerate(order_input.items):
        if line.product_id is None and line.variant_id is None:
            raise ValidationFailed(
                "the order is invalid",
                errors=[FieldError(f"items[{index}].product_id", "product_id or variant_id")],
            )
        choice = (line.product_id, line.variant_id, line.options or None)
        if choice in seen:
            # Two lines naming the same variant in other words are refused once resolved.
            raise ValidationFailed(
                "the order is invalid",
                errors=[
                    FieldError(f"items[{index}].product_id", "each variant may appear only once")
                ],
            )
        seen.append(choice)
    return order_input


# ---- the order as the contract shows it (REST body, gRPC source, stored idempotent answer) ----


class Order(msgspec.Struct, frozen=True):
    id: int
    user_id: int
    status: OrderStatus
    items: list[OrderItem]
    subtotal: int
    discount: int
    tax: int
    total: int
    currency: str
    promotion_code: str | None
    shipping_address: ShippingAddress | None
    note: str | None
    created_at: datetime
    updated_at: datetime
    # While pending: when its held stock is released (and the order cancelled) unless paid.
    reserved_until: datetime | None = None


class OrderPage(msgspec.Struct, frozen=True):
    items: list[Order]
    next_cursor: str | None


def order_view(order: OrderRecord) -> Order:
    return Order(
        id=order.id,
        user_id=order.user_id,
        status=check_status(order.status),
        items=[OrderItem.of(i) for i in order.items],
        subtotal=order.subtotal,
        discount=order.discount,
        tax=order.tax,
        total=order.total,
        currency=order.currency,
        promotion_code=order.promotion_code,
        shipping_address=msgspec.convert(order.shipping_address, ShippingAddress)
        if order.shipping_address is not None
        else None,
        note=order.note,
        created_at=order.created_at,
        updated_at=order.updated_at,
        reserved_until=order.reserved_until,
    )


def check_status(value: str, field: str = "status") -> OrderStatus:
    for status in ORDER_STATUSES:
        if value == status:
            return status
    raise ValidationFailed(
        f"unknown order status {value!r}",
        errors=[FieldError(field, "one of " + ", ".join(ORDER_STATUSES))],
    )
