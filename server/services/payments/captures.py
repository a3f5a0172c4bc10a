"""Recording a capture, whichever way the provider's word arrives (its answer to the gateway's
call, or a webhook), on an order and payment the caller has locked.

A capture can arrive for a payment the gateway gave up on: the order's hold ran out while the
provider's answer was on its way, so the expiry job failed the payment, cancelled the order and
put its stock back on sale. The money was taken all the same. It is recorded (the gateway's
totals match the provider's) and, since the order will not be fulfilled, claimed back in full in
the same transaction. The caller asks the provider for that refund once the transaction has
committed; if it cannot, the refund-settling job does (services.payments.refunds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from server.db import payments as payments_db
from server.db.orders import OrderRecord
from server.db.payments import PaymentRecord, RefundRecord
from server.services.orders.status import apply_move

log = logging.getLogger(__name__)

CLAIMED_BACK = "the order was cancelled before the provider confirmed the payment"


@dataclass(frozen=True, slots=True)
class Capture:
    payment: PaymentRecord
    recorded: bool
    # The full refund of a capture whose order was cancelled meanwhile: ask the provider for it.
    claim: RefundRecord | None = None


async def record_capture(
    conn: asyncpg.Connection,
    order: OrderRecord,
    payment: PaymentRecord,
    *,
    captured: int,
    reference: str | None,
) -> Capture:
    """Record that the provider captured `captured` of `payment` (both rows locked)."""
    if payment.status == "failed":
        live = await payments_db.live_payment(conn, order.id)
        if live is not None:
            # Another attempt of this order is live; two captures of one order cannot both be
            # recorded (one live payment per order). Rare enough to leave to a person.
            log.error(
                "payment %d was captured at the provider after it failed, while payment %d of "
                "order %d is live: refund it at the provider",
                payment.id,
                live.id,
                order.id,
            )
            return Capture(payment, recorded=False)
    settled = await payments_db.settle(
        conn, payment.id, status="captured", reference=reference, captured=captured
    )
    if order.status == "pending":
        await apply_move(conn, order, "paid")
        return Capture(settled, recorded=True)
    if order.status != "cancelled" or captured <= 0:
        return Capture(settled, recorded=True)
    counted = await payments_db.add_refunded(conn, payment.id, captured)
    assert counted is not None  # nothing of a payment captured just now was refunded
    claim = await payments_db.insert_refund(
        conn,
        counted,
        captured,
        status="pending",
        reference=None,
        reason=CLAIMED_BACK,
        restocked=[],
    )
    log.warning(
        "payment %d of cancelled order %d was captured late (%d); refunding it in full",
        payment.id,
        order.id,
        captured,
    )
    return Capture(counted, recorded=True, claim=claim)
