"""Paying an order: authorise (and capture) through the provider, capture later, or void.

The payment state machine, and the order following it:

    pending ──► authorized ──► captured ──► partially_refunded ──► refunded
       │            │              (order: paid)                  (order: refunded)
       └► failed    └► voided (order: cancelled, stock released)

- A payment row is written `pending` before the provider is called and settled after, each in
  its own short transaction: no database transaction stays open across a network call. The
  provider call carries an idempotency key made of the payment id, so a retry of the same
  payment (after a timeout) cannot charge twice.
- An order has at most one live payment (a unique index): a second POST while one is pending
  retries that one; after a failure or a void a new attempt may start.
- Capture commits the order's stock reservation and moves the order to `paid`; a second
  capture is a Conflict (409 / FAILED_PRECONDITION).
"""

from __future__ import annotations

import logging

import asyncpg

from server.context import AppContext
from server.db import orders as orders_db
from server.db import payments as payments_db
from server.db.orders import OrderRecord
from server.db.payments import PaymentRecord
from server.domain.errors import Conflict, FieldError, NotFound, Unavailable, ValidationFailed
from server.domain.principal import Principal
from server.services import events
from server.services.catalog_cache import stock_changed
from server.services.orders.reading import visible_to
from server.services.orders.status import apply_move
from server.services.payments.calls import calling_provider, provider_of
from server.services.payments.captures import Capture, record_capture
from server.services.payments.model import Payment, PaymentCapture, PaymentCreate, payment_view
from server.services.payments.provider import ChargeResult
from server.services.payments.refunds import ask_provider

log = logging.getLogger(__name__)


async def _locked_order(
    conn: asyncpg.Connection, principal: Principal, order_id: int
) -> OrderRecord:
    order = await orders_db.get_order(conn, order_id, for_update=True)
    if order is None or not visible_to(principal, order):
        raise NotFound(f"order {order_id} not found")
    return order


async def pay_order(
    ctx: AppContext, principal: Principal, order_id: int, data: PaymentCreate
) -> Payment:
    """Pay a pending order. A refused card is an answer, not an error: the payment comes back
    `failed` with its reason (REST answers it as 402), and the order stays pending."""
    provider = provider_of(ctx)
    async with ctx.pool.acquire() as conn:
        async with conn.transaction():
            order = await _locked_order(conn, principal, order_id)
            if order.status != "pending":
                raise Conflict(f"an order that is {order.status} cannot be paid")
            if order.total <= 0:
                raise Conflict("this order has nothing to pay; an admin marks it paid")
            payment = await payments_db.live_payment(conn, order.id)
            if payment is None:
                payment = await payments_db.insert_payment(
                    conn, order.id, provider.name, order.total, order.currency
                )
                assert payment is not None  # the order row lock keeps this the only attempt
            elif payment.status != "pending":
                raise Conflict(f"this order already has a payment that is {payment.status}")
        result = await calling_provider(
            provider.authorize(
                order_id=order.id,
                payment_id=payment.id,
                amount=payment.amount,
                currency=payment.currency,
                token=data.token,
                capture=data.capture,
                idempotency_key=f"payment-{payment.id}",
            )
        )
        async with events.collecting(ctx):
            settled = await _settle(conn, payment, result)
    await _claim_back(ctx, settled)
    return payment_view(settled.payment)


async def _settle(
    conn: asyncpg.Connection,
    payment: PaymentRecord,
    result: ChargeResult,
    *,
    only_from: str | None = None,
) -> Capture:
    """Record the provider's answer; a capture makes the order paid (same transaction). With
    `only_from`, a payment no longer in that state is a Conflict (a concurrent capture won)."""
    async with conn.transaction():
        order = await orders_db.get_order(conn, payment.order_id, for_update=True)
        current = await payments_db.get_payment(conn, payment.id, for_update=True)
        assert order is not None and current is not None
        if only_from is not None and current.status != only_from:
            raise Conflict(f"a payment that is {current.status} cannot be captured")
        if result.status == "captured" and current.status in ("pending", "authorized", "failed"):
            # `failed`: the order expired while this answer was on its way (captures.py).
            return await record_capture(
                conn,
                order,
                current,
                captured=result.amount_captured,
                reference=result.reference or None,
            )
        if current.status not in ("pending", "authorized"):
            return Capture(current, recorded=False)  # a webhook settled it meanwhile
        settled = await payments_db.settle(
            conn,
            payment.id,
            status=result.status,
            reference=result.reference or None,
            failure_reason=result.failure_reason,
        )
        return Capture(settled, recorded=True)


async def _claim_back(ctx: AppContext, capture: Capture) -> None:
    """A capture that came after its order was cancelled is refunded in full: asked now, and
    by the refund-settling job if the provider cannot be reached."""
    if capture.claim is None:
        return
    try:
        await ask_provider(ctx, capture.claim)
    except (Unavailable, Conflict) as exc:
        log.warning("refund %d of a late capture: %s", capture.claim.id, exc.detail)
    raise Conflict(
        "the order expired before the provider confirmed this payment; the "
        f"{capture.payment.captured} captured is refunded in full",
        errors=[FieldError("order", "cancelled", {"payment_id": capture.payment.id})],
    )


async def capture_payment(ctx: AppContext, payment_id: int, data: PaymentCapture) -> Payment:
    """Capture an authorised payment (staff only: the access level is the edge's)."""
    provider = provider_of(ctx)
    payment = await payments_db.get_payment(ctx.pool, payment_id)
    if payment is None:
        raise NotFound(f"payment {payment_id} not found")
    if payment.status != "authorized":
        raise Conflict(f"a payment that is {payment.status} cannot be captured")
    amount = payment.amount if data.amount is None else data.amount
    if amount > payment.amount:
        raise ValidationFailed(
            "cannot capture more than was authorised",
            errors=[FieldError("amount", f"at most {payment.amount}")],
        )
    assert payment.reference is not None
    result = await calling_provider(
        provider.capture(payment.reference, amount, f"capture-{payment.id}")
    )
    async with events.collecting(ctx), ctx.pool.acquire() as conn:
        # Another capture may have won the race meanwhile; the provider's idempotency key made
        # both calls one capture, and this one is told so (the check and the write share the
        # payment's row lock).
        settled = await _settle(conn, payment, result, only_from="authorized")
    return payment_view(settled.payment)


async def void_payment(ctx: AppContext, principal: Principal, payment_id: int) -> Payment:
    """Release an authorisation (owner or staff); the order is cancelled and its stock freed."""
    provider = provider_of(ctx)
    payment = await payments_db.get_payment(ctx.pool, payment_id)
    order = await orders_db.get_order(ctx.pool, payment.order_id) if payment else None
    if payment is None or order is None or not visible_to(principal, order):
        raise NotFound(f"payment {payment_id} not found")
    if payment.status != "authorized":
        raise Conflict(f"a payment that is {payment.status} cannot be voided")
    if order.status != "pending":  # an authorised payment belongs to a pending order
        raise Conflict(f"the order is {order.status}: its payment cannot be voided")
    assert payment.reference is not None
    await calling_provider(provider.void(payment.reference, f"void-{payment.id}"))
    async with events.collecting(ctx), ctx.pool.acquire() as conn, conn.transaction():
        order = await _locked_order(conn, principal, payment.order_id)
        current = await payments_db.get_payment(conn, payment.id, for_update=True)
        assert current is not None
        if current.status != "authorized":
            raise Conflict(f"a payment that is {current.status} cannot be voided")
        voided = await payments_db.settle(
            conn, payment.id, status="voided", failure_reason="voided"
        )
        if order.status == "pending":
            await apply_move(conn, order, "cancelled")
    await stock_changed(ctx, (item.product_id for item in order.items))
    return payment_view(voided)


async def list_payments(ctx: AppContext, principal: Principal, order_id: int) -> list[Payment]:
    order = await orders_db.get_order(ctx.pool, order_id)
    if order is None or not visible_to(principal, order):
        raise NotFound(f"order {order_id} not found")
    return [payment_view(p) for p in await payments_db.payments_of(ctx.pool, order_id)]
