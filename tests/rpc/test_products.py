"""gRPC ProductService: the same catalog rules as REST, with gRPC status codes."""

from __future__ import annotations

import uuid

import grpc
import pytest

from server.context import AppContext
from server.db import catalog as repo
from server.rpc.pb.storefront.v1 import common_pb2, products_pb2, products_pb2_grpc
from tests.conftest import ApiClient, UserFactory
from tests.orders_support import create_sized_product, insert_sellable


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def stub(grpc_channel: grpc.aio.Channel) -> products_pb2_grpc.ProductServiceStub:
    return products_pb2_grpc.ProductServiceStub(grpc_channel)


@pytest.fixture(scope="module")
async def tokens(make_user: UserFactory) -> dict[str, str]:
    return {role: (await make_user.create(role))[1] for role in ("admin", "service", "customer")}


async def make_product(
    ctx: AppContext,
    *,
    price: int = 100,
    stock: int = 5,
    active: bool = True,
    category_id: int | None = None,
) -> repo.Product:
    return await insert_sellable(
        ctx.pool,
        {
            "sku": f"RPC-{uuid.uuid4().hex[:10]}",
            "name": "Rpc thing",
            "price": price,
            "currency": "USD",
            "stock": stock,
            "is_active": active,
            "category_id": category_id,
        },
    )


async def test_get_product_matches_rest(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, api: ApiClient
) -> None:
    product = await make_product(ctx, price=4321)
    message = await stub.GetProduct(products_pb2.GetProductRequest(id=product.id))
    rest = (await api.get(f"/api/v1/products/{product.id}")).json()
    assert message.id == rest["id"] and message.sku == rest["sku"]
    assert message.price == 4321 and message.currency == "USD" and message.stock == 5
    assert not message.HasField("category_id")
    assert (
        message.created_at.ToDatetime().isoformat()
        == product.created_at.replace(tzinfo=None).isoformat()
    )


async def test_unknown_and_inactive_products_are_not_found(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, tokens: dict[str, str]
) -> None:
    hidden = await make_product(ctx, active=False)
    for product_id in (hidden.id, 99_999_999):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetProduct(products_pb2.GetProductRequest(id=product_id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    seen = await stub.GetProduct(
        products_pb2.GetProductRequest(id=hidden.id), metadata=auth(tokens["admin"])
    )
    assert seen.is_active is False


async def test_list_products_pages_with_the_rest_cursor(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, api: ApiClient
) -> None:
    category = await repo.insert_category(ctx.pool, "Rpc list", f"rpc-{uuid.uuid4().hex[:8]}", None)
    made = [await make_product(ctx, price=p, category_id=category.id) for p in (300, 100, 200)]
    request = products_pb2.ListProductsRequest(
        category=category.slug, sort="price", page=common_pb2.PageRequest(limit=2)
    )
    first = await stub.ListProducts(request)
    assert [p.price for p in first.items] == [100, 200] and first.next_cursor
    rest = await api.get(
        f"/api/v1/products?category={category.slug}&sort=price&limit=2&cursor={first.next_cursor}"
    )
    assert [p["price"] for p in rest.json()["items"]] == [300]
    request.page.cursor = first.next_cursor
    second = await stub.ListProducts(request)
    assert [p.id for p in second.items] == [made[0].id] and second.next_cursor == ""
    bounded = await stub.ListProducts(
        products_pb2.ListProductsRequest(
            category=str(category.id), min_price=150, max_price=300, sort="-price"
        )
    )
    assert [p.price for p in bounded.items] == [300, 200]


@pytest.mark.parametrize(
    "request_",
    [
        products_pb2.ListProductsRequest(sort="cheapest"),
        products_pb2.ListProductsRequest(page=common_pb2.PageRequest(limit=101)),
        products_pb2.ListProductsRequest(page=common_pb2.PageRequest(cursor="garbage")),
        products_pb2.ListProductsRequest(page=common_pb2.PageRequest(cursor="\x00\x01")),
        products_pb2.ListProductsRequest(q="\x00"),
        products_pb2.ListProductsRequest(category="\x00"),
    ],
)
async def test_bad_list_arguments_are_invalid_argument(
    stub: products_pb2_grpc.ProductServiceStub, request_: products_pb2.ListProductsRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListProducts(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_batch_get_keeps_order_and_reports_missing(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext
) -> None:
    a, b = await make_product(ctx), await make_product(ctx)
    hidden = await make_product(ctx, active=False)
    answer = await stub.BatchGetProducts(
        products_pb2.BatchGetProductsRequest(ids=[b.id, 77_777_777, a.id, b.id, hidden.id])
    )
    assert [p.id for p in answer.products] == [b.id, a.id]
    assert list(answer.missing_ids) == [77_777_777, hidden.id]


async def test_batch_get_refuses_more_than_500_ids(
    stub: products_pb2_grpc.ProductServiceStub,
) -> None:
    ok = await stub.BatchGetProducts(products_pb2.BatchGetProductsRequest(ids=range(1, 501)))
    assert len(ok.products) + len(ok.missing_ids) == 500
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchGetProducts(products_pb2.BatchGetProductsRequest(ids=range(1, 502)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_adjust_stock_never_goes_below_zero(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, tokens: dict[str, str]
) -> None:
    product = await make_product(ctx, stock=3)
    raised = await stub.AdjustStock(
        products_pb2.AdjustStockRequest(product_id=product.id, delta=4),
        metadata=auth(tokens["service"]),
    )
    assert raised.stock == 7
    lowered = await stub.AdjustStock(
        products_pb2.AdjustStockRequest(product_id=product.id, delta=-7),
        metadata=auth(tokens["admin"]),
    )
    assert lowered.stock == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(
            products_pb2.AdjustStockRequest(product_id=product.id, delta=-1),
            metadata=auth(tokens["admin"]),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await repo.get_product(ctx.pool, product.id)).stock == 0  # type: ignore[union-attr]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(
            products_pb2.AdjustStockRequest(product_id=88_888_888, delta=1),
            metadata=auth(tokens["admin"]),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_adjust_stock_needs_admin_or_service(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, tokens: dict[str, str]
) -> None:
    product = await make_product(ctx)
    request = products_pb2.AdjustStockRequest(product_id=product.id, delta=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(request)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(request, metadata=auth(tokens["customer"]))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(request, metadata=auth("not-a-token"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_variants_over_grpc_stock_and_option_filters(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, tokens: dict[str, str]
) -> None:
    product, sizes = await create_sized_product(ctx.pool, stocks={"S": 1, "M": 0})
    message = await stub.GetProduct(products_pb2.GetProductRequest(id=product))
    assert [(v.id, dict(v.options), v.stock) for v in message.variants] == [
        (sizes["S"], {"size": "S"}, 1),
        (sizes["M"], {"size": "M"}, 0),
    ]
    assert [(o.name, list(o.values)) for o in message.options] == [("size", ["S", "M"])]
    which = products_pb2.AdjustStockRequest(product_id=product, delta=5)
    with pytest.raises(grpc.aio.AioRpcError) as ambiguous:
        await stub.AdjustStock(which, metadata=auth(tokens["admin"]))
    assert ambiguous.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    adjusted = await stub.AdjustStock(
        products_pb2.AdjustStockRequest(product_id=product, delta=5, variant_id=sizes["M"]),
        metadata=auth(tokens["service"]),
    )
    assert adjusted.stock == 6
    listed = await stub.ListProducts(
        products_pb2.ListProductsRequest(
            q=message.name, option=["size:M"], in_stock=True, page=common_pb2.PageRequest(limit=5)
        )
    )
    assert [p.id for p in listed.items] == [product]


async def test_public_reads_come_from_the_cache_and_follow_writes(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, tokens: dict[str, str]
) -> None:
    product = await make_product(ctx, stock=5)
    anonymous = products_pb2.GetProductRequest(id=product.id)
    assert (await stub.GetProduct(anonymous)).name == "Rpc thing"
    # Behind the cache's back: only a read of PostgreSQL can see this.
    await ctx.pool.execute("UPDATE products SET name = 'Renamed' WHERE id = $1", product.id)
    for metadata in ((), auth(tokens["customer"]), auth(tokens["service"])):
        assert (await stub.GetProduct(anonymous, metadata=metadata)).name == "Rpc thing"
    batch = products_pb2.BatchGetProductsRequest(ids=[product.id])
    assert [p.name for p in (await stub.BatchGetProducts(batch)).products] == ["Rpc thing"]
    admin = auth(tokens["admin"])
    assert (await stub.GetProduct(anonymous, metadata=admin)).name == "Renamed"
    # A write through the gateway retires the product's page: every reader sees it next.
    await stub.AdjustStock(
        products_pb2.AdjustStockRequest(product_id=product.id, delta=-2),
        metadata=auth(tokens["service"]),
    )
    after = await stub.GetProduct(anonymous)
    assert (after.name, after.stock) == ("Renamed", 3)
    assert [p.stock for p in (await stub.BatchGetProducts(batch)).products] == [3]


async def test_cached_messages_equal_the_database_ones(
    stub: products_pb2_grpc.ProductServiceStub, ctx: AppContext, tokens: dict[str, str]
) -> None:
    """The cached body decoded back (timestamps, options, variants) gives the same message."""
    category = await repo.insert_category(ctx.pool, "Rpc same", f"rpc-{uuid.uuid4().hex[:8]}", None)
    plain = await make_product(ctx, price=250, category_id=category.id)
    sized, _ = await create_sized_product(ctx.pool, stocks={"S": 2, "M": 0}, prices={"M": 900})
    await ctx.pool.execute("UPDATE products SET category_id = $1 WHERE id = $2", category.id, sized)
    admin = auth(tokens["admin"])
    for product_id in (plain.id, sized):
        request = products_pb2.GetProductRequest(id=product_id)
        cached = await stub.GetProduct(request)
        assert cached == await stub.GetProduct(request)  # the second one is a cache hit
        assert cached == await stub.GetProduct(request, metadata=admin)
    listing = products_pb2.ListProductsRequest(category=category.slug, sort="price")
    public = await stub.ListProducts(listing)
    assert [p.id for p in public.items] == [plain.id, sized]
    assert public == await stub.ListProducts(listing, metadata=admin)
    batch = products_pb2.BatchGetProductsRequest(ids=[sized, plain.id, 0, -4])
    answer = await stub.BatchGetProducts(batch)
    assert answer == await stub.BatchGetProducts(batch, metadata=admin)
    assert list(answer.missing_ids) == [0, -4]
