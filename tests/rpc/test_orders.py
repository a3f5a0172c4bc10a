"""storefront.v1.OrderService over a real gRPC channel: the same rules as REST /orders."""

from __future__ import annotations

import grpc
import pytest

from server.context import AppContext
from server.rpc.pb.storefront.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from tests.conftest import ApiClient
from tests.orders_support import (
    Accounts,
    cart_size,
    create_product,
    fill_cart,
    stock_of,
    variant_of,
)

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


@pytest.fixture(scope="module")
def stub(grpc_channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceStub:
    return orders_pb2_grpc.OrderServiceStub(grpc_channel)


def auth(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def create_request(items: dict[int, int], **fields: object) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        items=[common_pb2.CartItem(product_id=p, quantity=q) for p, q in items.items()], **fields
    )  # type: ignore[arg-type]


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value


async def placed(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts, quantity: int = 1
) -> tuple[orders_pb2.Order, str, int]:
    _, token = await accounts.create()
    product = await create_product(ctx.pool, stock=20)
    order = await stub.CreateOrder(create_request({product: quantity}), metadata=auth(token))
    return order, token, product


# ---- CreateOrder ------------------------------------------------------------------------------


async def test_create_order_takes_stock_and_leaves_the_cart_alone(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    kettle = await create_product(ctx.pool, stock=10, price=2500, name="Kettle")
    await fill_cart(ctx.pool, user.id, {kettle: 1})
    address = orders_pb2.ShippingAddress(
        name="Ada", line1="1 Road", city="London", postal_code="N1", country="GB"
    )

    order = await stub.CreateOrder(
        create_request({kettle: 2}, shipping_address=address, note="gift"), metadata=auth(token)
    )

    assert order.id > 0 and order.user_id == user.id
    assert order.status == orders_pb2.ORDER_STATUS_PENDING
    assert [
        (i.product_id, i.quantity, i.unit_price, i.line_total, i.name) for i in order.items
    ] == [(kettle, 2, 2500, 5000, "Kettle")]
    assert (order.subtotal, order.discount, order.tax, order.total) == (5000, 0, 0, 5000)
    assert order.currency == "USD" and not order.HasField("promotion_code")
    assert order.shipping_address == address and not order.shipping_address.HasField("line2")
    assert order.note == "gift" and order.created_at.seconds > 0
    assert await stock_of(ctx.pool, kettle) == 8
    assert await cart_size(ctx.pool, user.id) == 1


async def test_rest_and_grpc_show_the_same_order(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts, api: ApiClient
) -> None:
    order, token, _ = await placed(stub, ctx, accounts, quantity=3)
    body = (await api.get(f"/api/v1/orders/{order.id}", token=token)).json()
    assert (body["id"], body["user_id"], body["total"], body["status"]) == (
        order.id,
        order.user_id,
        order.total,
        "pending",
    )
    assert body["items"][0]["quantity"] == 3 and body["shipping_address"] is None


async def test_short_stock_is_failed_precondition_naming_the_line(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    _, token = await accounts.create()
    product = await create_product(ctx.pool, stock=1)
    error = await rpc_error(stub.CreateOrder(create_request({product: 2}), metadata=auth(token)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"items.{await variant_of(ctx.pool, product)}" in (error.details() or "")
    assert await stock_of(ctx.pool, product) == 1


@pytest.mark.parametrize(
    "items, extra",
    [
        ({}, {}),
        ({1: 0}, {}),
        ({1: 1000}, {}),
        ({1: 1}, {"note": "x" * 501}),
        ({1: 1}, {"shipping_address": orders_pb2.ShippingAddress(name="only a name")}),
        ({1: 1}, {"idempotency_key": "k" * 256}),
    ],
)
async def test_invalid_orders_are_invalid_argument(
    stub: orders_pb2_grpc.OrderServiceStub,
    accounts: Accounts,
    items: dict[int, int],
    extra: dict[str, object],
) -> None:
    _, token = await accounts.create()
    error = await rpc_error(stub.CreateOrder(create_request(items, **extra), metadata=auth(token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_duplicate_products_are_invalid_argument(
    stub: orders_pb2_grpc.OrderServiceStub, accounts: Accounts
) -> None:
    _, token = await accounts.create()
    request = orders_pb2.CreateOrderRequest(
        items=[
            common_pb2.CartItem(product_id=5, quantity=1),
            common_pb2.CartItem(product_id=5, quantity=1),
        ]
    )
    error = await rpc_error(stub.CreateOrder(request, metadata=auth(token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_order_needs_a_caller(stub: orders_pb2_grpc.OrderServiceStub) -> None:
    anonymous = await rpc_error(stub.CreateOrder(create_request({1: 1})))
    forged = await rpc_error(stub.CreateOrder(create_request({1: 1}), metadata=auth("not.a.token")))
    assert anonymous.code() == forged.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_idempotency_key_replays_the_first_order(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    request = create_request({product: 2}, idempotency_key="grpc-attempt-1")

    first_call = stub.CreateOrder(request, metadata=auth(token))
    first = await first_call
    replay_call = stub.CreateOrder(request, metadata=auth(token))
    replay = await replay_call

    assert replay == first
    assert ("idempotent-replayed", "true") in tuple(await replay_call.initial_metadata() or ())
    assert ("idempotent-replayed", "true") not in tuple(await first_call.initial_metadata() or ())
    assert await stock_of(ctx.pool, product) == 8
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user.id) == 1
    other = await rpc_error(
        stub.CreateOrder(
            create_request({product: 3}, idempotency_key="grpc-attempt-1"), metadata=auth(token)
        )
    )
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_replayed_refusal_keeps_its_code(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    _, token = await accounts.create()
    product = await create_product(ctx.pool, stock=0)
    request = create_request({product: 1}, idempotency_key="grpc-refused")
    first = await rpc_error(stub.CreateOrder(request, metadata=auth(token)))
    await ctx.pool.execute("UPDATE product_variants SET stock = 5 WHERE product_id = $1", product)
    replay = await rpc_error(stub.CreateOrder(request, metadata=auth(token)))
    assert first.code() == replay.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert replay.details() == first.details()
    assert await stock_of(ctx.pool, product) == 5


# ---- reading: BOLA ----------------------------------------------------------------------------


async def test_get_order_is_not_found_for_anyone_but_the_owner_and_staff(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, _ = await placed(stub, ctx, accounts)
    _, stranger = await accounts.create()
    _, admin = await accounts.create("admin")
    _, service = await accounts.create("service")
    request = orders_pb2.GetOrderRequest(id=order.id)

    assert await stub.GetOrder(request, metadata=auth(token)) == order
    assert await stub.GetOrder(request, metadata=auth(admin)) == order
    assert await stub.GetOrder(request, metadata=auth(service)) == order
    theirs = await rpc_error(stub.GetOrder(request, metadata=auth(stranger)))
    missing = await rpc_error(
        stub.GetOrder(orders_pb2.GetOrderRequest(id=987654321), metadata=auth(stranger))
    )
    assert theirs.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    anonymous = await rpc_error(stub.GetOrder(request))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_list_orders_shows_only_the_callers_orders(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    mine, token, product = await placed(stub, ctx, accounts)
    theirs, _, _ = await placed(stub, ctx, accounts)
    second = await stub.CreateOrder(create_request({product: 1}), metadata=auth(token))

    page = await stub.ListOrders(orders_pb2.ListOrdersRequest(), metadata=auth(token))
    assert [o.id for o in page.items] == [second.id, mine.id] and page.next_cursor == ""
    assert theirs.id not in [o.id for o in page.items]
    snooping = await rpc_error(
        stub.ListOrders(orders_pb2.ListOrdersRequest(user_id=theirs.user_id), metadata=auth(token))
    )
    assert snooping.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_list_orders_pages_and_filters(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    first, token, product = await placed(stub, ctx, accounts)
    later = [
        await stub.CreateOrder(create_request({product: 1}), metadata=auth(token)) for _ in range(2)
    ]
    _, admin = await accounts.create("admin")
    await stub.UpdateOrderStatus(
        orders_pb2.UpdateOrderStatusRequest(id=first.id, status=orders_pb2.ORDER_STATUS_PAID),
        metadata=auth(admin),
    )

    page_one = await stub.ListOrders(
        orders_pb2.ListOrdersRequest(page=common_pb2.PageRequest(limit=2), user_id=first.user_id),
        metadata=auth(admin),
    )
    page_two = await stub.ListOrders(
        orders_pb2.ListOrdersRequest(
            page=common_pb2.PageRequest(limit=2, cursor=page_one.next_cursor), user_id=first.user_id
        ),
        metadata=auth(admin),
    )
    paid = await stub.ListOrders(
        orders_pb2.ListOrdersRequest(status=orders_pb2.ORDER_STATUS_PAID), metadata=auth(token)
    )

    assert [o.id for o in page_one.items] == [later[1].id, later[0].id]
    assert [o.id for o in page_two.items] == [first.id] and page_two.next_cursor == ""
    assert [o.id for o in paid.items] == [first.id]
    bad = await rpc_error(
        stub.ListOrders(
            orders_pb2.ListOrdersRequest(page=common_pb2.PageRequest(cursor="garbage")),
            metadata=auth(token),
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- UpdateOrderStatus ------------------------------------------------------------------------


async def test_update_order_status_is_for_staff_only(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, _ = await placed(stub, ctx, accounts)
    _, stranger = await accounts.create()
    request = orders_pb2.UpdateOrderStatusRequest(
        id=order.id, status=orders_pb2.ORDER_STATUS_CANCELLED
    )
    for caller in (token, stranger):
        error = await rpc_error(stub.UpdateOrderStatus(request, metadata=auth(caller)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        await stub.GetOrder(orders_pb2.GetOrderRequest(id=order.id), metadata=auth(token))
    ).status == orders_pb2.ORDER_STATUS_PENDING


async def test_update_order_status_follows_the_state_machine(
    stub: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> None:
    order, _, product = await placed(stub, ctx, accounts, quantity=4)
    _, service = await accounts.create("service")
    _, admin = await accounts.create("admin")

    def move(status: int) -> orders_pb2.UpdateOrderStatusRequest:
        return orders_pb2.UpdateOrderStatusRequest(id=order.id, status=status)  # type: ignore[arg-type]

    paid = await stub.UpdateOrderStatus(move(orders_pb2.ORDER_STATUS_PAID), metadata=auth(service))
    assert (
        paid.status == orders_pb2.ORDER_STATUS_PAID
        and paid.updated_at.ToDatetime() >= order.updated_at.ToDatetime()
    )
    refused = await rpc_error(
        stub.UpdateOrderStatus(move(orders_pb2.ORDER_STATUS_CANCELLED), metadata=auth(service))
    )
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    unspecified = await rpc_error(
        stub.UpdateOrderStatus(move(orders_pb2.ORDER_STATUS_UNSPECIFIED), metadata=auth(admin))
    )
    assert unspecified.code() == grpc.StatusCode.INVALID_ARGUMENT
    cancelled = await stub.UpdateOrderStatus(
        move(orders_pb2.ORDER_STATUS_CANCELLED), metadata=auth(admin)
    )
    assert cancelled.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert await stock_of(ctx.pool, product) == 20
    unknown = await rpc_error(
        stub.UpdateOrderStatus(
            orders_pb2.UpdateOrderStatusRequest(id=987654321, status=orders_pb2.ORDER_STATUS_PAID),
            metadata=auth(admin),
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
