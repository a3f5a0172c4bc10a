"""storefront.v1.ProductService: the gRPC twin of REST /products, over the same services.

Reads by anyone but an admin come from the same cache as REST's public reads (exact product
pages, list views of ids), so they are as fresh as REST's; admins read PostgreSQL, as on REST.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from server.context import AppContext
from server.db.catalog import Product
from server.rpc.auth import current_principal
from server.rpc.common import timestamp
from server.rpc.errors import translate_errors
from server.rpc.pb.storefront.v1 import common_pb2, products_pb2, products_pb2_grpc
from server.services import catalog
from server.services.catalog import ProductQuery


def product_message(product: Product) -> common_pb2.Product:
    message = common_pb2.Product(
        id=product.id,
        sku=product.sku,
        name=product.name,
        description=product.description,
        price=product.price,
        currency=product.currency,
        stock=product.stock,
        is_active=product.is_active,
        created_at=timestamp(product.created_at),
        updated_at=timestamp(product.updated_at),
        options=[common_pb2.ProductOption(name=o.name, values=o.values) for o in product.options],
        variants=[
            common_pb2.Variant(
                id=v.id,
                sku=v.sku,
                options=v.options,
                price=v.price,
                stock=v.stock,
                is_active=v.is_active,
            )
            for v in product.variants
        ],
    )
    if product.category_id is not None:
        message.category_id = product.category_id
    return message


def product_query(request: products_pb2.ListProductsRequest) -> ProductQuery:
    """Proto3 defaults (empty, 0) mean "not given", as an absent REST query parameter."""
    return ProductQuery(
        category=request.category or None,
        q=request.q or None,
        min_price=request.min_price if request.HasField("min_price") else None,
        max_price=request.max_price if request.HasField("max_price") else None,
        in_stock=request.in_stock,
        option=tuple(request.option),
        sort=request.sort or None,
        limit=request.page.limit or None,
        cursor=request.page.cursor or None,
    )


class ProductServicer(products_pb2_grpc.ProductServiceServicer):
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @translate_errors
    async def GetProduct(
        self, request: products_pb2.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Product:
        principal = current_principal.get()
        if principal is None or not principal.is_admin:
            return product_message(await catalog.read_public_product(self.ctx, request.id))
        return product_message(await catalog.get_product(self.ctx.pool, request.id, principal))

    @translate_errors
    async def ListProducts(
        self, request: products_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> products_pb2.ListProductsResponse:
        principal, query = current_principal.get(), product_query(request)
        if principal is None or not principal.is_admin:
            page = await catalog.read_public_page(self.ctx, query)
        else:
            page = await catalog.list_products(self.ctx.pool, query, principal)
        return products_pb2.ListProductsResponse(
            items=[product_message(p) for p in page.items], next_cursor=page.next_cursor or ""
        )

    @translate_errors
    async def BatchGetProducts(
        self, request: products_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext
    ) -> products_pb2.BatchGetProductsResponse:
        principal, ids = current_principal.get(), list(request.ids)
        if principal is None or not principal.is_admin:
            found, missing = await catalog.read_public_products(self.ctx, ids)
        else:
            found, missing = await catalog.batch_get_products(self.ctx.pool, ids, principal)
        return products_pb2.BatchGetProductsResponse(
            products=[product_message(p) for p in found], missing_ids=missing
        )

    @translate_errors
    async def AdjustStock(
        self, request: products_pb2.AdjustStockRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Product:
        variant_id = request.variant_id if request.HasField("variant_id") else None
        product = await catalog.adjust_stock(
            self.ctx, request.product_id, request.delta, variant_id
        )
        return product_message(product)


SERVICE = products_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name
# Who may call each method (services/permissions.py), checked by the AuthInterceptor.
ACCESS = {
    f"/{SERVICE}/GetProduct": "anyone",
    f"/{SERVICE}/ListProducts": "anyone",
    f"/{SERVICE}/BatchGetProducts": "anyone",
    f"/{SERVICE}/AdjustStock": "staff",
}


def register(server: grpc.aio.Server, ctx: AppContext) -> Sequence[str]:
    products_pb2_grpc.add_ProductServiceServicer_to_server(ProductServicer(ctx), server)
    return [SERVICE]
