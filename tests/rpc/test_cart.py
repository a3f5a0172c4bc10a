"""gRPC CartService.PriceCart: the very figures REST's cart shows for the same lines."""

from __future__ import annotations

import uuid

import grpc
import pytest

from server.context import AppContext
from server.db import catalog as repo
from server.rpc.pb.storefront.v1 import cart_pb2, cart_pb2_grpc, common_pb2
from tests.conftest import ApiClient, UserFactory
from tests.orders_support import insert_sellable


@pytest.fixture(scope="module")
def stub(grpc_channel: grpc.aio.Channel) -> cart_pb2_grpc.CartServiceStub:
    return cart_pb2_grpc.CartServiceStub(grpc_channel)


async def make_product(ctx: AppContext, price: int, active: bool = True) -> repo.Product:
    return await insert_sellable(
        ctx.pool,
        {
            "sku": f"CART-{uuid.uuid4().hex[:10]}",
            "name": "Priced",
            "price": price,
            "currency": "USD",
            "stock": 100,
            "is_active": active,
        },
    )


async def make_promotion(ctx: AppContext, **values: object) -> str:
    code = f"RPC{uuid.uuid4().hex[:8]}"
    columns = {"code": code, "kind": "percent", "value": 10, **values}
    names = ", ".join(columns)
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await ctx.pool.execute(f"INSERT INTO promotions ({names}) VALUES ({marks})", *columns.values())
    return code


def items(*pairs: tuple[int, int]) -> list[common_pb2.CartItem]:
    return [common_pb2.CartItem(product_id=p, quantity=q) for p, q in pairs]


async def test_price_cart_equals_the_rest_cart(
    stub: cart_pb2_grpc.CartServiceStub, ctx: AppContext, api: ApiClient, make_user: UserFactory
) -> None:
    a, b = await make_product(ctx, 125), await make_product(ctx, 999)
    code = await make_promotion(ctx, kind="fixed", value=301)
    _, token = await make_user.create("customer")
    for product, quantity in ((a, 3), (b, 2)):
        await api.post(
            "/api/v1/cart/items", json={"product_id": product.id, "quantity": quantity}, token=token
        )
    rest = (
        await api.post("/api/v1/cart/promotion", json={"code": code.lower()}, token=token)
    ).json()
    quote = await stub.PriceCart(
        cart_pb2.PriceCartRequest(items=items((a.id, 3), (b.id, 2)), promotion_code=code.lower())
    )
    as_rest = {
        "items": [
            {
                "product_id": line.product_id,
                "variant_id": line.variant_id,
                "sku": line.sku,
                "name": line.name,
                "options": dict(line.options),
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "line_subtotal": line.line_subtotal,
                "line_discount": line.line_discount,
                "line_total": line.line_total,
            }
            for line in quote.items
        ],
        "subtotal": quote.subtotal,
        "discount": quote.discount,
        "tax": quote.tax,
        "total": quote.total,
        "currency": quote.currency,
        "promotion_code": quote.promotion_code if quote.HasField("promotion_code") else None,
    }
    assert as_rest == rest
    assert rest["discount"] == 301 and rest["promotion_code"] == code


async def test_price_cart_without_code_has_no_promotion(
    stub: cart_pb2_grpc.CartServiceStub, ctx: AppContext
) -> None:
    product = await make_product(ctx, 250)
    quote = await stub.PriceCart(cart_pb2.PriceCartRequest(items=items((product.id, 4))))
    assert quote.total == 1000 and not quote.HasField("promotion_code")


async def test_price_cart_errors(stub: cart_pb2_grpc.CartServiceStub, ctx: AppContext) -> None:
    product = await make_product(ctx, 100)
    inactive = await make_product(ctx, 100, active=False)
    expired = await make_promotion(ctx, starts_at=None, ends_at=None, usage_limit=0)
    minimum = await make_promotion(ctx, min_subtotal=10_000)
    cases = [
        (cart_pb2.PriceCartRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (cart_pb2.PriceCartRequest(items=items((product.id, 0))), grpc.StatusCode.INVALID_ARGUMENT),
        (
            cart_pb2.PriceCartRequest(items=items((product.id, 1000))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            cart_pb2.PriceCartRequest(items=items((product.id, 1), (product.id, 2))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (cart_pb2.PriceCartRequest(items=items((inactive.id, 1))), grpc.StatusCode.NOT_FOUND),
        (
            cart_pb2.PriceCartRequest(items=items((product.id, 1)), promotion_code="NOPE"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            cart_pb2.PriceCartRequest(items=items((product.id, 1)), promotion_code=expired),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            cart_pb2.PriceCartRequest(items=items((product.id, 1)), promotion_code=minimum),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PriceCart(request)
        assert caught.value.code() == code, request
