"""Stripe webhooks: verify the `Stripe-Signature` (HMAC-SHA256 over "<t>.<body>", timestamp
within STRIPE_WEBHOOK_TOLERANCE), refuse a replayed delivery, apply each event once.

- A forged, stale or malformed delivery is a 400 and changes nothing.
- The same signed delivery again (same event id, same signature timestamp) is a replay: 400.
- Stripe re-delivering an event (same id, new signature) is acknowledged (200) without being
  applied again, so Stripe stops retrying.
- Events move payments only forwards (pending → authorized → captured; pending → failed), under
  the payment's row lock, so a webhook racing the synchronous answer of the same payment cannot
  apply anything twice. A capture makes a pending order paid. A capture of a payment given up
  on when its order expired is recorded and refunded in full (captures.py).
- A payment is found by its PaymentIntent id, or, when the answer that would have told the
  gateway that id was lost, by `metadata.payment_id` (with `metadata.order_id` matching).
- A refund Stripe answered `pending` settles by `charge.refund.updated` (or `refund.updated`,
  `refund.failed`): succeeded, or failed, which gives its amount back to what can be refunded.
- `charge.refunded` with more refunded than the gateway knows (a refund made in Stripe's
  dashboard) records the difference as a refund, so totals match Stripe.
- Unknown event types and payments the gateway did not create are acknowledged and ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import msgspec

from server.context import AppContext
from server.db import orders as orders_db
from server.db import payments as payments_db
from server.db.orders import OrderRecord
from server.db.payments import PaymentRecord
from server.domain.errors import BadRequest, Conflict, FieldError, NotFound, Unavailable
from server.services import events
from server.services.payments import stripe
from server.services.payments.captures import Capture, record_capture
from server.services.payments.model import refund_view
from server.services.payments.refunds import ask_provider, refunded_when_all_back
from server.services.payments.stripe import WebhookEvent

log = logging.getLogger(__name__)

_FORWARD = {
    "pending": {"authorized", "captured", "failed"},
    "authorized": {"captured", "failed"},
    # Given up on when its order expired, but the provider captured it after all (captures.py).
    "failed": {"captured"},
}
_EVENT_STATUS = {
    "payment_intent.amount_capturable_updated": "authorized",
    "payment_intent.succeeded": "captured",
    "payment_intent.payment_failed": "failed",
}


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    applied: bool
    duplicate: bool = False


def _bad(message: str) -> BadRequest:
    return BadRequest(message, errors=[FieldError("Stripe-Signature", message)])


async def receive_stripe(
    ctx: AppContext, payload: bytes, signature: str | None, *, now: float | None = None
) -> WebhookAnswer:
    secret = ctx.settings.stripe_webhook_secret
    if ctx.settings.payment_provider != "stripe" or not secret:
        raise NotFound("no Stripe webhook endpoint on this store")
    try:
        signed_at = stripe.verify_signature(
            payload, signature, secret, tolerance=ctx.settings.stripe_webhook_tolerance, now=now
        )
    except stripe.SignatureError as exc:
        raise _bad(f"signature refused: {exc}") from None
    try:
        event = stripe.parse_event(payload)
    except ValueError as exc:
        raise BadRequest(f"malformed event: {exc}") from None
    async with events.collecting(ctx), ctx.pool.acquire() as conn, conn.transaction():
        seen = await payments_db.record_event(conn, "stripe", event.id, signed_at, event.type)
        if seen == "replay":
            raise _bad("this delivery was already received (replay refused)")
        if seen == "duplicate":
            return WebhookAnswer(applied=False, duplicate=True)
        applied = await _apply(conn, event)
    if isinstance(applied, Capture):
        if applied.claim is not None:  # captured after its order was cancelled: give it back
            try:
                await ask_provider(ctx, applied.claim)
            except (Unavailable, Conflict) as exc:
                log.warning("refund %d of a late capture: %s", applied.claim.id, exc.detail)
        return WebhookAnswer(applied=applied.recorded)
    return WebhookAnswer(applied=applied)


async def _payment_of(conn: asyncpg.Connection, event: WebhookEvent) -> PaymentRecord | None:
    """The gateway's payment an event is about: by the PaymentIntent id, or, when the answer
    that would have told the gateway that id was lost, by the payment id in its metadata."""
    if event.payment_reference is None:
        return None
    payment = await payments_db.by_reference(conn, "stripe", event.payment_reference)
    if payment is not None or event.payment_id is None:
        return payment
    payment = await payments_db.get_payment(conn, event.payment_id)
    if (
        payment is None
        or payment.provider != "stripe"
        or payment.order_id != event.order_id
        or payment.reference is not None
    ):
        return None
    return payment


async def _apply(conn: asyncpg.Connection, event: WebhookEvent) -> bool | Capture:
    payment = await _payment_of(conn, event)
    if payment is None:
        return False
    order = await orders_db.get_order(conn, payment.order_id, for_update=True)
    payment = await payments_db.get_payment(conn, payment.id, for_update=True)
    assert order is not None and payment is not None
    if event.type == "charge.refunded":
        return await _refunded_at_provider(conn, order, payment, event)
    if event.type in stripe.REFUND_EVENTS:
        return await _refund_settled(conn, order, payment, event)
    target = _EVENT_STATUS.get(event.type)
    if target is None or target not in _FORWARD.get(payment.status, set()):
        return False
    if target == "captured":
        return await record_capture(
            conn,
            order,
            payment,
            captured=min(event.amount_captured or 0, payment.amount),
            reference=event.payment_reference,
        )
    await payments_db.settle(
        conn,
        payment.id,
        status=target,
        reference=event.payment_reference,
        failure_reason=event.failure_reason if target == "failed" else None,
    )
    return True


async def _refund_settled(
    conn: asyncpg.Connection,
    order: OrderRecord,
    payment: PaymentRecord,
    event: WebhookEvent,
) -> bool:
    """A refund Stripe had answered `pending` succeeded or failed. A failed one gives its
    amount back to what can be refunded; units it restocked stay on sale (they were returned)."""
    if event.refund_reference is None or event.refund_status not in ("succeeded", "failed"):
        return False
    refund = await payments_db.refund_by_reference(
        conn, payment.id, event.refund_reference, for_update=True
    )
    if refund is None or refund.status != "pending":
        return False  # unknown, or settled already (events may arrive out of order)
    if event.refund_status == "failed":
        await payments_db.add_refunded(conn, payment.id, -refund.amount, allow_any=True)
    await payments_db.finish_refund(
        conn,
        refund.id,
        event.refund_status,
        refund.reference,
        refund.restocked,
        reason=(event.failure_reason or "failed at the provider")
        if event.refund_status == "failed"
        else None,
    )
    if event.refund_status == "succeeded":
        await refunded_when_all_back(conn, order, payment.id)
    return True


async def _refunded_at_provider(
    conn: asyncpg.Connection, order: OrderRecord, payment: PaymentRecord, event: WebhookEvent
) -> bool:
    total = event.amount_refunded
    if total is None or total <= payment.refunded:
        return False  # the gateway's own refunds, already counted
    extra = min(total, payment.captured) - payment.refunded
    if extra <= 0 or await payments_db.add_refunded(conn, payment.id, extra) is None:
        return False
    refund = await payments_db.insert_refund(
        conn,
        payment,
        extra,
        status="succeeded",
        reference=None,
        reason="refunded at the provider",
        restocked=[],
    )
    await events.emit(
        conn,
        "refund.created",
        msgspec.to_builtins(refund_view(refund)),
        live=[events.order_topic(order.user_id)],
    )
    await refunded_when_all_back(conn, order, payment.id)
    return True
