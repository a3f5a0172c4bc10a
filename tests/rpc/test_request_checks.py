"""gRPC requests that cannot be decoded, or carry NUL in a string (PostgreSQL text cannot hold
it), are the caller's mistake: INVALID_ARGUMENT before any servicer runs, never UNKNOWN, and
nothing is written."""

from __future__ import annotations

import grpc
import pytest

from server.context import AppContext
from server.rpc.pb.storefront.v1 import (
    cart_pb2,
    cart_pb2_grpc,
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    products_pb2,
)
from tests.orders_support import Accounts, create_product, stock_of


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(
    "payload",
    [b"\x1a\x02\xff\xfe", b"\x1a\x05ab", b"\x08" + b"\xff" * 11],
    ids=["invalid-utf8-string", "truncated-field", "overlong-varint"],
)
async def test_an_undecodable_request_is_invalid_argument(
    grpc_channel: grpc.aio.Channel, payload: bytes
) -> None:
    call = grpc_channel.unary_unary(
        "/storefront.v1.ProductService/ListProducts",
        request_serializer=None,  # the raw bytes as they are
        response_deserializer=products_pb2.ListProductsResponse.FromString,
    )
    code, details = await status_of(call(payload, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "could not be decoded" in details


def _address(**changes: str) -> orders_pb2.ShippingAddress:
    fields = {"name": "Ada", "line1": "1 Road", "city": "London", "postal_code": "N1"}
    return orders_pb2.ShippingAddress(**{**fields, "country": "GB", **changes})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"note": "hi\x00there"}, "note"),
        ({"promotion_code": "SAVE\x00"}, "promotion_code"),
        ({"shipping_address": _address(name="A\x00")}, "shipping_address.name"),
    ],
    ids=["note", "promotion-code", "address"],
)
async def test_nul_in_an_order_is_invalid_argument_and_takes_no_stock(
    grpc_channel: grpc.aio.Channel,
    ctx: AppContext,
    accounts: Accounts,
    changes: dict[str, object],
    field: str,
) -> None:
    _, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    request = orders_pb2.CreateOrderRequest(
        items=[common_pb2.CartItem(product_id=product, quantity=1)], **changes
    )
    stub = orders_pb2_grpc.OrderServiceStub(grpc_channel)

    code, details = await status_of(stub.CreateOrder(request, metadata=bearer(token)))

    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(field) and "NUL" in details
    assert await stock_of(ctx.pool, product) == 10


async def test_nul_in_a_quote_is_invalid_argument_and_the_caller_is_checked_first(
    grpc_channel: grpc.aio.Channel, ctx: AppContext
) -> None:
    product = await create_product(ctx.pool, stock=10)
    request = cart_pb2.PriceCartRequest(
        items=[common_pb2.CartItem(product_id=product, quantity=1)], promotion_code="X\x00"
    )
    stub = cart_pb2_grpc.CartServiceStub(grpc_channel)
    code, _ = await status_of(stub.PriceCart(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    forged = await status_of(stub.PriceCart(request, metadata=bearer("not-a-token")))
    assert forged[0] == grpc.StatusCode.UNAUTHENTICATED  # authentication still comes first
    fine = cart_pb2.PriceCartRequest(items=[common_pb2.CartItem(product_id=product, quantity=1)])
    assert (await status_of(stub.PriceCart(fine)))[0] == grpc.StatusCode.OK


def test_nul_is_found_at_any_depth_of_a_message() -> None:
    from server.rpc.requests import nul_field

    line = common_pb2.CartItem(product_id=1, quantity=1)
    line.options["size"] = "M\x00"
    assert nul_field(orders_pb2.CreateOrderRequest(items=[line])) == "items.options"
    keyed = common_pb2.CartItem(product_id=1, quantity=1)
    keyed.options["si\x00ze"] = "M"
    assert nul_field(orders_pb2.CreateOrderRequest(items=[keyed])) == "items.options"
    clean = common_pb2.CartItem(product_id=1, quantity=1)
    clean.options["size"] = "M"
    request = orders_pb2.CreateOrderRequest(items=[clean], note="fine", shipping_address=_address())
    assert nul_field(request) is None
