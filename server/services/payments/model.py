"""Payments and refunds as the contract shows them, and their inputs (REST bodies and the
shapes gRPC requests are converted to)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from server.db.payments import PaymentRecord, RefundRecord, RestockLine
from server.domain.values import END, Charge, Id, Quantity

PaymentStatus = Literal[
    "pending", "authorized", "captured", "failed", "refunded", "partially_refunded", "voided"
]
CardToken = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=255,
        pattern="^[A-Za-z0-9_]+" + END,
        description="the provider's card or payment-method token (test provider: tok_visa, "
        "tok_declined, tok_insufficient_funds, tok_unavailable)",
    ),
]
Reason = Annotated[str, msgspec.Meta(max_length=500, pattern="^[^\x00]*$")]


class PaymentCreate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    token: CardToken
    # False: only authorise now; an admin or a service captures later.
    capture: bool = True


class PaymentCapture(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Absent: the whole authorised amount.
    amount: Charge | None = None


class RestockItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    variant_id: Id
    quantity: Quantity


class RefundCreate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`items`: units to put back on sale; `restock: true`: every unit of the order not yet
    put back. Neither: the money only."""

    amount: Charge
    restock: bool = False
    items: Annotated[list[RestockItem], msgspec.Meta(max_length=100)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    reason: Reason | None = None


class Payment(msgspec.Struct, frozen=True):
    id: int
    order_id: int
    provider: str
    status: PaymentStatus
    amount: int
    captured: int
    refunded: int
    currency: str
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class Refund(msgspec.Struct, frozen=True):
    id: int
    payment_id: int
    order_id: int
    amount: int
    status: Literal["succeeded", "pending", "failed"]
    reason: str | None
    restocked: list[RestockLine]
    created_at: datetime


class PaymentList(msgspec.Struct, frozen=True):
    items: list[Payment]


class RefundList(msgspec.Struct, frozen=True):
    items: list[Refund]


def payment_view(record: PaymentRecord) -> Payment:
    return Payment(
        record.id,
        record.order_id,
        record.provider,
        record.status,  # type: ignore[arg-type]
        record.amount,
        record.captured,
        record.refunded,
        record.currency,
        record.failure_reason,
        record.created_at,
        record.updated_at,
    )


def refund_view(record: RefundRecord) -> Refund:
    return Refund(
        record.id,
        record.payment_id,
        record.order_id,
        record.amount,
        record.status,  # type: ignore[arg-type]
        record.reason,
        record.restocked,
        record.created_at,
    )
