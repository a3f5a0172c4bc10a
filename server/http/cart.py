"""REST cart: the caller's own server-side cart, priced on every answer."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from server.http.base import ApiHandler
from server.http.catalog import resource_id
from server.openapi import Operation, Param, read_query
from server.services import cart
from server.services.cart import CartItemAdd, CartItemUpdate, CartPromotionApply, CartView

_PRICING = (
    "Priced by the Rust engine on every answer: line discounts rounded half-even per line, tax "
    "half-even once on the discounted subtotal. Lines of products that became inactive are left "
    "out. An attached promotion that is no longer usable (expired, used up, below its minimum) "
    "stays attached but is not applied (`promotion_code` null) until it is usable again."
)


LINE_PARAMS = (
    Param(
        "variant_id",
        int,
        "The line's variant; needed only when the cart holds several variants of the product.",
        minimum=1,
    ),
)


def _send_cart(handler: ApiHandler, view: CartView) -> None:
    handler.set_header("Cache-Control", "private, no-store")
    handler.send_json(msgspec.json.encode(view))


class CartHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "user"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation("Get my cart", response=CartView, description=_PRICING),
    }

    async def get(self) -> None:
        principal = self.caller
        _send_cart(self, await cart.get_cart(self.ctx, principal.user_id))


class CartItemsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "user"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Add a product variant to my cart",
            request=CartItemAdd,
            response=CartView,
            errors=(404, 409),
            description="The variant is `variant_id`, else the product's variant with these "
            "`options`, else the product's only variant. Quantities add up. 404 unknown or "
            "inactive product or variant; 409 when the line would hold more than the variant's "
            "stock; 422 beyond 999 units, options that are not the product's, a variant of "
            "another product, or a product with several variants named without one.",
        ),
    }

    async def post(self) -> None:
        principal = self.caller
        data = self.parse_body(CartItemAdd)
        _send_cart(self, await cart.add_item(self.ctx, principal.user_id, data))


class CartItemHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"PATCH": "user", "DELETE": "user"}
    api: ClassVar[dict[str, Operation]] = {
        "PATCH": Operation(
            "Set a line's quantity",
            request=CartItemUpdate,
            response=CartView,
            query=LINE_PARAMS,
            errors=(409,),
            description="0 removes the line. 404 when the product (or the variant) is not in "
            "the cart; 409 more than the stock; 422 when the cart holds several variants of "
            "the product and `variant_id` is absent.",
        ),
        "DELETE": Operation(
            "Remove a line",
            response=CartView,
            query=LINE_PARAMS,
            description="404 when the product (or the variant) is not in the cart; 422 when the "
            "cart holds several variants of the product and `variant_id` is absent.",
        ),
    }

    async def patch(self, product_id: str) -> None:
        principal = self.caller
        data = self.parse_body(CartItemUpdate)
        variant_id = read_query(self, LINE_PARAMS)["variant_id"]
        view = await cart.set_item_quantity(
            self.ctx, principal.user_id, resource_id(product_id, "product"), data, variant_id
        )
        _send_cart(self, view)

    async def delete(self, product_id: str) -> None:
        principal = self.caller
        variant_id = read_query(self, LINE_PARAMS)["variant_id"]
        view = await cart.remove_item(
            self.ctx, principal.user_id, resource_id(product_id, "product"), variant_id
        )
        _send_cart(self, view)


class CartPromotionHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "user", "DELETE": "user"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Attach a promotion code to my cart",
            request=CartPromotionApply,
            response=CartView,
            errors=(404,),
            description="Codes are case-insensitive. 404 unknown code; 422 expired, not started, "
            "used up, or the subtotal is below its minimum. Replaces any attached "
            "code.",
        ),
        "DELETE": Operation("Detach the promotion code", response=CartView),
    }

    async def post(self) -> None:
        principal = self.caller
        data = self.parse_body(CartPromotionApply)
        _send_cart(self, await cart.apply_promotion(self.ctx, principal.user_id, data))

    async def delete(self) -> None:
        principal = self.caller
        _send_cart(self, await cart.remove_promotion(self.ctx, principal.user_id))


routes = [
    (r"/api/v1/cart/?", CartHandler),
    (r"/api/v1/cart/items/?", CartItemsHandler),
    (r"/api/v1/cart/items/(?P<product_id>[0-9]+)/?", CartItemHandler),
    (r"/api/v1/cart/promotion/?", CartPromotionHandler),
]
