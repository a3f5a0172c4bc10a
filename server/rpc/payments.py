"""storefront.v1.PaymentService: the gRPC twin of REST payments and refunds, over the same
service functions (server.services.payments)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import msgspec

from server.context import AppContext
from server.rpc import auth
from server.rpc.common import timestamp, validated
from server.rpc.errors import translate_errors
from server.rpc.pb.storefront.v1 import payments_pb2, payments_pb2_grpc
from server.services.orders import idempotency_key
from server.services.payments import charges, refunds
from server.services.payments.model import (
    Payment,
    PaymentCapture,
    PaymentCreate,
    Refund,
    RefundCreate,
)

_STATUS: dict[str, payments_pb2.PaymentStatus] = {
    "pending": payments_pb2.PAYMENT_STATUS_PENDING,
    "authorized": payments_pb2.PAYMENT_STATUS_AUTHORIZED,
    "captured": payments_pb2.PAYMENT_STATUS_CAPTURED,
    "failed": payments_pb2.PAYMENT_STATUS_FAILED,
    "refunded": payments_pb2.PAYMENT_STATUS_REFUNDED,
    "partially_refunded": payments_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED,
    "voided": payments_pb2.PAYMENT_STATUS_VOIDED,
}
CREATE_REFUND_METHOD = "/storefront.v1.PaymentService/CreateRefund"


def payment_message(payment: Payment) -> payments_pb2.Payment:
    message = payments_pb2.Payment(
        id=payment.id,
        order_id=payment.order_id,
        provider=payment.provider,
        status=_STATUS[payment.status],
        amount=payment.amount,
        captured=payment.captured,
        refunded=payment.refunded,
        currency=payment.currency,
        created_at=timestamp(payment.created_at),
        updated_at=timestamp(payment.updated_at),
    )
    if payment.failure_reason is not None:
        message.failure_reason = payment.failure_reason
    return message


def refund_message(refund: Refund) -> payments_pb2.Refund:
    message = payments_pb2.Refund(
        id=refund.id,
        payment_id=refund.payment_id,
        order_id=refund.order_id,
        amount=refund.amount,
        status=refund.status,
        restocked=[
            payments_pb2.RestockLine(variant_id=line.variant_id, quantity=line.quantity)
            for line in refund.restocked
        ],
        created_at=timestamp(refund.created_at),
    )
    if refund.reason is not None:
        message.reason = refund.reason
    return message


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @translate_errors
    async def CreatePayment(
        self, request: payments_pb2.CreatePaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.Payment:
        principal = await auth.require_principal(context)
        data = validated(
            {
                "token": request.token,
                "capture": request.capture if request.HasField("capture") else True,
            },
            PaymentCreate,
        )
        return payment_message(await charges.pay_order(self.ctx, principal, request.order_id, data))

    @translate_errors
    async def CapturePayment(
        self, request: payments_pb2.CapturePaymentRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.Payment:
        data = validated(
            {"amount": request.amount} if request.HasField("amount") else {}, PaymentCapture
        )
        return payment_message(await charges.capture_payment(self.ctx, request.payment_id, data))

    @translate_errors
    async def CreateRefund(
        self, request: payments_pb2.CreateRefundRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.Refund:
        fields: dict[str, object] = {"amount": request.amount, "restock": request.restock_all}
        if request.items:
            fields["items"] = [
                {"variant_id": line.variant_id, "quantity": line.quantity} for line in request.items
            ]
        if request.HasField("reason"):
            fields["reason"] = request.reason
        data = validated(fields, RefundCreate)
        key = idempotency_key(
            request.idempotency_key or None,
            "GRPC",
            f"{CREATE_REFUND_METHOD}/{request.order_id}",
            msgspec.to_builtins(data),
        )
        outcome = await refunds.refund_order(self.ctx, request.order_id, data, key)
        if outcome.replayed:
            await context.send_initial_metadata((("idempotent-replayed", "true"),))
        return refund_message(outcome.refund)

    @translate_errors
    async def ListPayments(
        self, request: payments_pb2.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ListPaymentsResponse:
        principal = await auth.require_principal(context)
        found = await charges.list_payments(self.ctx, principal, request.order_id)
        refunded = await refunds.list_refunds(self.ctx, principal, request.order_id)
        return payments_pb2.ListPaymentsResponse(
            payments=[payment_message(p) for p in found],
            refunds=[refund_message(r) for r in refunded],
        )


SERVICE = payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name
# Who may call each method (services/permissions.py), checked by the AuthInterceptor; `owner`:
# the payments service shows a customer only their own orders.
ACCESS = {
    f"/{SERVICE}/CreatePayment": "owner",
    f"/{SERVICE}/CapturePayment": "staff",
    f"/{SERVICE}/CreateRefund": "staff",
    f"/{SERVICE}/ListPayments": "owner",
}


def register(server: grpc.aio.Server, ctx: AppContext) -> Sequence[str]:
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentServicer(ctx), server)
    return [SERVICE]
