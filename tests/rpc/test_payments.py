"""storefront.v1.PaymentService (and variants in OrderService/CartService) over a real gRPC
channel: the same rules as REST payments and refunds."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from server.context import AppContext
from server.rpc.pb.storefront.v1 import (
    cart_pb2,
    cart_pb2_grpc,
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
)
from tests.orders_support import Accounts, create_product, create_sized_product, stock_of

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


@pytest.fixture(scope="module")
def payments(grpc_channel: grpc.aio.Channel) -> payments_pb2_grpc.PaymentServiceStub:
    return payments_pb2_grpc.PaymentServiceStub(grpc_channel)


@pytest.fixture(scope="module")
def orders(grpc_channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceStub:
    return orders_pb2_grpc.OrderServiceStub(grpc_channel)


def auth(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value


async def an_order(
    orders: orders_pb2_grpc.OrderServiceStub,
    ctx: AppContext,
    accounts: Accounts,
    quantity: int = 2,
) -> tuple[orders_pb2.Order, str, int]:
    _, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10, price=1500)
    order = await orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            items=[common_pb2.CartItem(product_id=product, quantity=quantity)]
        ),
        metadata=auth(token),
    )
    return order, token, product


async def test_pay_capture_and_refund_over_grpc(
    payments: payments_pb2_grpc.PaymentServiceStub,
    orders: orders_pb2_grpc.OrderServiceStub,
    ctx: AppContext,
    accounts: Accounts,
) -> None:
    order, token, product = await an_order(orders, ctx, accounts)
    assert order.HasField("reserved_until")
    _, admin = await accounts.create("admin")
    payment = await payments.CreatePayment(
        payments_pb2.CreatePaymentRequest(order_id=order.id, token="tok_visa", capture=False),
        metadata=auth(token),
    )
    assert payment.status == payments_pb2.PAYMENT_STATUS_AUTHORIZED
    denied = await rpc_error(
        payments.CapturePayment(
            payments_pb2.CapturePaymentRequest(payment_id=payment.id), metadata=auth(token)
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    captured = await payments.CapturePayment(
        payments_pb2.CapturePaymentRequest(payment_id=payment.id), metadata=auth(admin)
    )
    assert captured.status == payments_pb2.PAYMENT_STATUS_CAPTURED
    again = await rpc_error(
        payments.CapturePayment(
            payments_pb2.CapturePaymentRequest(payment_id=payment.id), metadata=auth(admin)
        )
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    paid = await orders.GetOrder(orders_pb2.GetOrderRequest(id=order.id), metadata=auth(token))
    assert paid.status == orders_pb2.ORDER_STATUS_PAID and not paid.HasField("reserved_until")

    request = payments_pb2.CreateRefundRequest(
        order_id=order.id, amount=order.total, restock_all=True, idempotency_key="all-of-it"
    )
    refund = await payments.CreateRefund(request, metadata=auth(admin))
    replay = payments.CreateRefund(request, metadata=auth(admin))
    assert (await replay).id == refund.id
    assert ("idempotent-replayed", "true") in tuple(await replay.initial_metadata())
    assert [(r.variant_id, r.quantity) for r in refund.restocked] == [
        (order.items[0].variant_id, 2)
    ]
    assert await stock_of(ctx.pool, product) == 10
    refunded = await orders.GetOrder(orders_pb2.GetOrderRequest(id=order.id), metadata=auth(token))
    assert refunded.status == orders_pb2.ORDER_STATUS_REFUNDED
    listed = await payments.ListPayments(
        payments_pb2.ListPaymentsRequest(order_id=order.id), metadata=auth(token)
    )
    assert [p.status for p in listed.payments] == [payments_pb2.PAYMENT_STATUS_REFUNDED]
    assert [r.amount for r in listed.refunds] == [order.total]


async def test_grpc_refunds_never_exceed_the_capture(
    payments: payments_pb2_grpc.PaymentServiceStub,
    orders: orders_pb2_grpc.OrderServiceStub,
    ctx: AppContext,
    accounts: Accounts,
) -> None:
    order, token, _ = await an_order(orders, ctx, accounts)
    _, admin = await accounts.create("admin")
    await payments.CreatePayment(
        payments_pb2.CreatePaymentRequest(order_id=order.id, token="tok_visa"),
        metadata=auth(token),
    )

    async def one() -> grpc.StatusCode:
        try:
            await payments.CreateRefund(
                payments_pb2.CreateRefundRequest(order_id=order.id, amount=1000),
                metadata=auth(admin),
            )
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            return error.code()

    codes = await asyncio.gather(*(one() for _ in range(8)))

    assert sorted(codes, key=str).count(grpc.StatusCode.OK) == 3  # 3 000 captured
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}


async def test_a_declined_card_over_grpc_is_a_failed_payment(
    payments: payments_pb2_grpc.PaymentServiceStub,
    orders: orders_pb2_grpc.OrderServiceStub,
    ctx: AppContext,
    accounts: Accounts,
) -> None:
    order, token, _ = await an_order(orders, ctx, accounts)
    declined = await payments.CreatePayment(
        payments_pb2.CreatePaymentRequest(order_id=order.id, token="tok_declined"),
        metadata=auth(token),
    )
    assert declined.status == payments_pb2.PAYMENT_STATUS_FAILED
    assert declined.failure_reason == "card_declined"
    bad = await rpc_error(
        payments.CreatePayment(
            payments_pb2.CreatePaymentRequest(order_id=order.id, token="no spaces"),
            metadata=auth(token),
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, stranger = await accounts.create()
    hidden = await rpc_error(
        payments.CreatePayment(
            payments_pb2.CreatePaymentRequest(order_id=order.id, token="tok_visa"),
            metadata=auth(stranger),
        )
    )
    assert hidden.code() == grpc.StatusCode.NOT_FOUND


async def test_orders_and_quotes_name_variants_over_grpc(
    orders: orders_pb2_grpc.OrderServiceStub,
    grpc_channel: grpc.aio.Channel,
    ctx: AppContext,
    accounts: Accounts,
) -> None:
    product, sizes = await create_sized_product(
        ctx.pool, stocks={"S": 2, "M": 2}, prices={"M": 1200}
    )
    _, token = await accounts.create()
    quote = await cart_pb2_grpc.CartServiceStub(grpc_channel).PriceCart(
        cart_pb2.PriceCartRequest(
            items=[
                common_pb2.CartItem(product_id=product, options={"size": "S"}, quantity=1),
                common_pb2.CartItem(variant_id=sizes["M"], quantity=1),
            ]
        )
    )
    assert [(line.variant_id, line.unit_price) for line in quote.items] == [
        (sizes["S"], 1000),
        (sizes["M"], 1200),
    ]
    ambiguous = await rpc_error(
        orders.CreateOrder(
            orders_pb2.CreateOrderRequest(
                items=[common_pb2.CartItem(product_id=product, quantity=1)]
            ),
            metadata=auth(token),
        )
    )
    assert ambiguous.code() == grpc.StatusCode.INVALID_ARGUMENT
    order = await orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            items=[common_pb2.CartItem(product_id=product, options={"size": "M"}, quantity=2)]
        ),
        metadata=auth(token),
    )
    assert [(i.variant_id, dict(i.options), i.unit_price) for i in order.items] == [
        (sizes["M"], {"size": "M"}, 1200)
    ]
    short = await rpc_error(
        orders.CreateOrder(
            orders_pb2.CreateOrderRequest(
                items=[common_pb2.CartItem(variant_id=sizes["M"], quantity=1)]
            ),
            metadata=auth(token),
        )
    )
    assert short.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"items.{sizes['M']}" in (short.details() or "")
