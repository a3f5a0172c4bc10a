"""Refunds: full or partial, in minor units, optionally putting units back on sale, never more
than was captured, and idempotent by the caller's key.

Three steps, none holding a transaction across the provider call:
1. Claim (one transaction, the payment row locked): check the amount against what is left,
   count it as refunded at once (a conditional UPDATE, so concurrent refunds can never together
   pass what was captured) and write the refund `pending` under the Idempotency-Key.
2. Ask the provider, with the refund id as its idempotency key.
3. Settle: on success the refund succeeds, the units go back on sale, and a refund that brings
   the total back to zero makes the order `refunded`; on failure the claim is undone.

A retry with the same key answers the first refund (Idempotent-Replayed); with the same key
and another body it is a 422; while the first is still pending, a 409.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import msgspec

from server.context import AppContext
from server.db import orders as orders_db
from server.db import payments as payments_db
from server.db import variants as variants_db
from server.db.orders import OrderRecord
from server.db.payments import PaymentRecord, RefundRecord, RestockLine
from server.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from server.domain.principal import Principal
from server.services import events
from server.services.catalog_cache import stock_changed
from server.services.orders.idempotency import IdempotencyKey
from server.services.orders.reading import visible_to
from server.services.orders.status import announce_stock, apply_move
from server.services.payments.charges import calling_provider, provider_of
from server.services.payments.model import Refund, RefundCreate, refund_view
from server.services.payments.provider import RefundResult

# Order states a full refund moves to `refunded` (a cancelled order stays cancelled).
_REFUNDABLE_ORDER_STATES = ("paid", "shipped", "delivered")


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    refund: Refund
    replayed: bool


def _restock_plan(order: OrderRecord, data: RefundCreate) -> dict[int, int]:
    """Units (by variant) this refund puts back on sale; ValidationFailed when more than a
    line sold (less what earlier refunds restocked)."""
    if data.items is not msgspec.UNSET and data.restock:
        raise ValidationFailed(
            "give either items or restock: true",
            errors=[FieldError("items", "restock: true already restocks every unit")],
        )
    left = {item.variant_id: item.quantity - item.restocked for item in order.items}
    if data.restock:
        return {v: q for v, q in left.items() if q > 0}
    plan: dict[int, int] = {}
    for index, line in enumerate([] if data.items is msgspec.UNSET else data.items):
        plan[line.variant_id] = plan.get(line.variant_id, 0) + line.quantity
        if line.variant_id not in left:
            raise ValidationFailed(
                "not a line of this order",
                errors=[FieldError(f"items[{index}].variant_id", "not in this order")],
            )
        if plan[line.variant_id] > left[line.variant_id]:
            raise ValidationFailed(
                "more units than this line has left to restock",
                errors=[FieldError(f"items[{index}].quantity", f"at most {left[line.variant_id]}")],
            )
    return plan


def _replay(existing: RefundRecord, request: IdempotencyKey) -> RefundOutcome:
    if existing.request_hash != request.request_hash:
        raise ValidationFailed(
            "this Idempotency-Key was used for another refund",
            errors=[FieldError("Idempotency-Key", "reused with a different body")],
        )
    if existing.status == "pending":
        raise Conflict("a refund with this Idempotency-Key is still in progress")
    if existing.status == "failed":
        raise Conflict("the refund with this Idempotency-Key failed; use a new key to retry")
    return RefundOutcome(refund_view(existing), True)


async def _claim(
    conn: asyncpg.Connection,
    order_id: int,
    data: RefundCreate,
    request: IdempotencyKey | None,
) -> tuple[PaymentRecord, RefundRecord, dict[int, int]] | RefundOutcome:
    async with conn.transaction():
        order = await orders_db.get_order(conn, order_id, for_update=True)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        if request is not None:
            existing = await payments_db.refund_by_key(conn, order_id, request.key)
            if existing is not None:
                return _replay(existing, request)
        payment = await payments_db.captured_payment(conn, order_id)
        if payment is None:
            raise Conflict("this order has no captured payment to refund")
        plan = _restock_plan(order, data)
        counted = await payments_db.add_refunded(conn, payment.id, data.amount)
        if counted is None:
            left = payment.captured - payment.refunded
            raise Conflict(
                f"cannot refund {data.amount}: {left} of the {payment.captured} captured is left",
                errors=[FieldError("amount", f"at most {left}", {"refundable": left})],
            )
        refund = await payments_db.insert_refund(
            conn,
            payment,
            data.amount,
            status="pending",
            reference=None,
            reason=data.reason,
            restocked=[],
            idempotency_key=request.key if request else None,
            request_hash=request.request_hash if request else None,
        )
    return counted, refund, plan


async def refund_order(
    ctx: AppContext, order_id: int, data: RefundCreate, request: IdempotencyKey | None = None
) -> RefundOutcome:
    """Refund `data.amount` of the order's captured payment (staff only: the edge checks)."""
    provider = provider_of(ctx)
    async with ctx.pool.acquire() as conn:
        claimed = await _claim(conn, order_id, data, request)
        if isinstance(claimed, RefundOutcome):
            return claimed
        payment, refund, plan = claimed
        assert payment.reference is not None
        try:
            result = await calling_provider(
                provider.refund(payment.reference, data.amount, f"refund-{refund.id}")
            )
        except BaseException:
            await _undo(conn, payment, refund, "the provider could not be asked")
            raise
        if result.status == "failed":
            await _undo(conn, payment, refund, result.failure_reason or "refused")
            raise Conflict(f"the provider refused the refund: {result.failure_reason}")
        async with events.collecting(ctx):
            settled, order = await _settle(conn, payment, refund, plan, result)
    if settled.restocked:
        await stock_changed(ctx, (item.product_id for item in order.items))
    return RefundOutcome(refund_view(settled), False)


async def _undo(
    conn: asyncpg.Connection, payment: PaymentRecord, refund: RefundRecord, why: str
) -> None:
    async with conn.transaction():
        await payments_db.add_refunded(conn, payment.id, -refund.amount, allow_any=True)
        await payments_db.finish_refund(conn, refund.id, "failed", None, [], reason=why)


async def _settle(
    conn: asyncpg.Connection,
    payment: PaymentRecord,
    refund: RefundRecord,
    plan: dict[int, int],
    result: RefundResult,
) -> tuple[RefundRecord, OrderRecord]:
    async with conn.transaction():
        order = await orders_db.get_order(conn, payment.order_id, for_update=True)
        assert order is not None
        # Units another refund restocked meanwhile are not restocked twice (the UPDATE is
        # conditional); what could not be put back is left out of `restocked`.
        restocked = {
            v: q for v, q in plan.items() if await orders_db.mark_restocked(conn, order.id, {v: q})
        }
        announce_stock(await variants_db.restock(conn, restocked))
        settled = await payments_db.finish_refund(
            conn,
            refund.id,
            "succeeded" if result.status == "succeeded" else "pending",
            result.reference,
            [RestockLine(v, q) for v, q in sorted(restocked.items())],
        )
        await events.emit(
            conn,
            "refund.created",
            msgspec.to_builtins(refund_view(settled)),
            live=[events.order_topic(order.user_id)],
        )
        current = await payments_db.get_payment(conn, payment.id)
        assert current is not None
        if current.status == "refunded" and order.status in _REFUNDABLE_ORDER_STATES:
            order = msgspec.structs.replace(
                order, status=(await apply_move(conn, order, "refunded")).status
            )
    return settled, order


async def list_refunds(ctx: AppContext, principal: Principal, order_id: int) -> list[Refund]:
    order = await orders_db.get_order(ctx.pool, order_id)
    if order is None or not visible_to(principal, order):
        raise NotFound(f"order {order_id} not found")
    return [refund_view(r) for r in await payments_db.refunds_of(ctx.pool, order_id)]
