"""storefront.v1.CartService: price explicit items exactly as REST's cart would."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from server.context import AppContext
from server.rpc.errors import translate_errors
from server.rpc.pb.storefront.v1 import cart_pb2, cart_pb2_grpc, common_pb2
from server.services import cart
from server.services.cart import CartView
from server.services.variants import Choice


def priced_cart_message(view: CartView) -> cart_pb2.PricedCart:
    message = cart_pb2.PricedCart(
        items=[
            cart_pb2.PricedLine(
                product_id=line.product_id,
                variant_id=line.variant_id,
                options=line.options,
                sku=line.sku,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_subtotal=line.line_subtotal,
                line_discount=line.line_discount,
                line_total=line.line_total,
            )
            for line in view.items
        ],
        subtotal=view.subtotal,
        discount=view.discount,
        tax=view.tax,
        total=view.total,
        currency=view.currency,
    )
    if view.promotion_code is not None:
        message.promotion_code = view.promotion_code
    return message


def choice(item: common_pb2.CartItem) -> Choice:
    """Proto3 defaults (0, empty map) mean "not given"."""
    return Choice(
        product_id=item.product_id or None,
        variant_id=item.variant_id if item.HasField("variant_id") else None,
        options=dict(item.options) or None,
    )


class CartServicer(cart_pb2_grpc.CartServiceServicer):
    """Prices are public, so any caller may ask for a quote; nothing is stored."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @translate_errors
    async def PriceCart(
        self, request: cart_pb2.PriceCartRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.PricedCart:
        code = request.promotion_code if request.HasField("promotion_code") else None
        items = [cart.QuoteItem(choice(item), item.quantity) for item in request.items]
        view = await cart.price_items(self.ctx, items, code or None)
        return priced_cart_message(view)


SERVICE = cart_pb2.DESCRIPTOR.services_by_name["CartService"].full_name
# Who may call each method (services/permissions.py), checked by the AuthInterceptor.
ACCESS = {f"/{SERVICE}/PriceCart": "anyone"}


def register(server: grpc.aio.Server, ctx: AppContext) -> Sequence[str]:
    cart_pb2_grpc.add_CartServiceServicer_to_server(CartServicer(ctx), server)
    return [SERVICE]
