"""REST payments and refunds: paying an order, capturing or voiding a payment, refunding, and
the Stripe webhook. Each handler parses, calls one function of server.services.payments and
serialises."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from server.domain.errors import FieldError
from server.http.base import ApiError, ApiHandler
from server.openapi import Operation
from server.services.orders import idempotency_key
from server.services.payments import charges, refunds, webhooks
from server.services.payments.model import (
    Payment,
    PaymentCapture,
    PaymentCreate,
    PaymentList,
    Refund,
    RefundCreate,
    RefundList,
)

_PAYMENTS = (
    "The payment state machine: `pending → authorized → captured → partially_refunded → "
    "refunded`, `pending → failed`, `authorized → voided`. A capture makes the order `paid` (its "
    "stock reservation becomes a sale); a void cancels it and frees the stock; a refund of "
    "everything captured makes it `refunded`."
)


def _send_private(handler: ApiHandler, body: bytes, status: int = 200) -> None:
    handler.set_header("Cache-Control", "private, no-store")
    handler.send_json(body, status)


class OrderPaymentsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "owner", "POST": "owner"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "List an order's payments",
            response=PaymentList,
            description="Every attempt, oldest first. The owner, admins and services; anyone "
            "else gets 404.",
        ),
        "POST": Operation(
            "Pay an order",
            request=PaymentCreate,
            response=Payment,
            status=201,
            errors=(402, 409, 503),
            description="Charges the order's total through the store's provider "
            "(`PAYMENT_PROVIDER`). `capture: false` only authorises; an admin captures later. "
            "**402** when the card is declined: the failed attempt is recorded "
            "(`errors[0].payment_id`) and the order stays `pending` — pay again with another "
            "card. **409** when the order is not pending, is already paid or being paid, or "
            "the store takes no payments. **503** (Retry-After) when the provider is "
            "unreachable: nothing was charged twice; the same request retries that attempt. "
            + _PAYMENTS,
        ),
    }

    async def get(self, order_id: str) -> None:
        principal = self.caller
        items = await charges.list_payments(self.ctx, principal, int(order_id))
        _send_private(self, msgspec.json.encode(PaymentList(items)))

    async def post(self, order_id: str) -> None:
        principal = self.caller
        data = self.parse_body(PaymentCreate)
        payment = await charges.pay_order(self.ctx, principal, int(order_id), data)
        if payment.status == "failed":
            raise ApiError(
                402,
                f"the payment was declined: {payment.failure_reason}",
                errors_=[
                    FieldError(
                        "token", payment.failure_reason or "declined", {"payment_id": payment.id}
                    )
                ],
            )
        _send_private(self, msgspec.json.encode(payment), 201)


class PaymentCaptureHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "staff"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Capture an authorised payment",
            request=PaymentCapture,
            response=Payment,
            errors=(409, 503),
            description="Admins and services. Captures all (or `amount`) of an authorised "
            "payment; the order becomes `paid`. 409 when it is not authorised (a second capture "
            "included); 422 for more than was authorised. " + _PAYMENTS,
        ),
    }

    async def post(self, payment_id: str) -> None:
        data = self.parse_body(PaymentCapture)
        payment = await charges.capture_payment(self.ctx, int(payment_id), data)
        _send_private(self, msgspec.json.encode(payment))


class PaymentVoidHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "owner"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Void an authorised payment",
            response=Payment,
            errors=(409, 503),
            description="The order's owner, admins and services. Releases the authorisation, "
            "cancels the order and puts its stock back on sale. 409 unless authorised.",
        ),
    }

    async def post(self, payment_id: str) -> None:
        principal = self.caller
        payment = await charges.void_payment(self.ctx, principal, int(payment_id))
        _send_private(self, msgspec.json.encode(payment))


class OrderRefundsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "owner", "POST": "staff"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "List an order's refunds",
            response=RefundList,
            description="Oldest first. The owner, admins and services; anyone else gets 404.",
        ),
        "POST": Operation(
            "Refund an order",
            request=RefundCreate,
            response=Refund,
            status=201,
            errors=(409, 503),
            description="Admins and services. Gives back `amount` (minor units) of the "
            "order's captured payment — never more than is left (409 with `refundable`), even "
            "under concurrent refunds. `items` puts those units back on sale; `restock: true` "
            "every unit not yet put back (422 for more than a line sold). When the provider "
            "has taken back everything captured the order becomes `refunded`. **503** when the "
            "provider's answer never came: the refund stays `pending` (counted) and is asked "
            "again under the same provider key, by a retry with the same Idempotency-Key or by "
            "the refund-settling job, so the money goes back once; 409 when the provider "
            "refused it.\n\n"
            "**Idempotency-Key** (header, up to 255 characters, per order) makes a retry "
            "return the first refund with `Idempotent-Replayed: true` (or finish it, if its "
            "answer was lost); the same key with another body → 422; after the provider "
            "refused it → 409 (use a new key).",
            headers={"Idempotent-Replayed": "`true` for the stored answer of an earlier request"},
        ),
    }

    async def get(self, order_id: str) -> None:
        principal = self.caller
        items = await refunds.list_refunds(self.ctx, principal, int(order_id))
        _send_private(self, msgspec.json.encode(RefundList(items)))

    async def post(self, order_id: str) -> None:
        data = self.parse_body(RefundCreate)
        key = idempotency_key(
            self.request.headers.get("Idempotency-Key"),
            "POST",
            f"/api/v1/orders/{int(order_id)}/refunds",
            msgspec.to_builtins(data),
        )
        outcome = await refunds.refund_order(self.ctx, int(order_id), data, key)
        if outcome.replayed:
            self.set_header("Idempotent-Replayed", "true")
        _send_private(self, msgspec.json.encode(outcome.refund), 201)


class StripeWebhookHandler(ApiHandler):
    """Authenticated by the Stripe-Signature HMAC, not by a token, and not rate limited per IP
    (Stripe sends every store's events from a few addresses; forgeries cost one HMAC)."""

    rate_limited: ClassVar[bool] = False
    access: ClassVar[dict[str, str]] = {"POST": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Stripe webhook",
            description="Only with `PAYMENT_PROVIDER=stripe` (404 otherwise). The raw body must "
            "carry a valid `Stripe-Signature` (HMAC-SHA256 with `STRIPE_WEBHOOK_SECRET`, "
            "timestamp within `STRIPE_WEBHOOK_TOLERANCE`, default 300 s): 400 otherwise, and "
            "400 for the same signed delivery sent twice (replay). A re-delivery of a known "
            "event answers 200 without applying it again. Handles "
            "`payment_intent.succeeded`, `payment_intent.amount_capturable_updated`, "
            "`payment_intent.payment_failed` and `charge.refunded`; others are acknowledged.",
            errors=(400, 404),
        ),
    }

    async def post(self) -> None:
        answer = await webhooks.receive_stripe(
            self.ctx, self.request.body, self.request.headers.get("Stripe-Signature")
        )
        self.send_json(
            msgspec.json.encode(
                {"received": True, "applied": answer.applied, "duplicate": answer.duplicate}
            )
        )


_ID = r"([0-9]{1,18})"

routes = [
    (rf"/api/v1/orders/{_ID}/payments/?", OrderPaymentsHandler),
    (rf"/api/v1/orders/{_ID}/refunds/?", OrderRefundsHandler),
    (rf"/api/v1/payments/{_ID}/capture/?", PaymentCaptureHandler),
    (rf"/api/v1/payments/{_ID}/void/?", PaymentVoidHandler),
    (r"/api/v1/payments/webhooks/stripe/?", StripeWebhookHandler),
]
