"""storefront.v1.OrderService: the gRPC twin of REST /orders, over the same service functions.

The caller comes from server.rpc.auth (its interceptor verified the `authorization` metadata).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import msgspec

from server.context import AppContext
from server.rpc import auth
from server.rpc.common import timestamp
from server.rpc.errors import translate_errors
from server.rpc.pb.storefront.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from server.services import orders
from server.services.orders import Order

CREATE_ORDER_METHOD = "/storefront.v1.OrderService/CreateOrder"

_STATUS_TO_PB: dict[str, orders_pb2.OrderStatus] = {
    "pending": orders_pb2.ORDER_STATUS_PENDING,
    "paid": orders_pb2.ORDER_STATUS_PAID,
    "shipped": orders_pb2.ORDER_STATUS_SHIPPED,
    "delivered": orders_pb2.ORDER_STATUS_DELIVERED,
    "cancelled": orders_pb2.ORDER_STATUS_CANCELLED,
    "refunded": orders_pb2.ORDER_STATUS_REFUNDED,
}
_STATUS_FROM_PB: dict[int, str] = {int(v): k for k, v in _STATUS_TO_PB.items()}


def _status_name(value: int) -> str:
    # UNSPECIFIED (or an unknown number) fails the service's status validation: INVALID_ARGUMENT.
    return _STATUS_FROM_PB.get(value, "unspecified")


def order_message(order: Order) -> orders_pb2.Order:
    message = orders_pb2.Order(
        id=order.id,
        user_id=order.user_id,
        status=_STATUS_TO_PB[order.status],
        items=[
            orders_pb2.OrderItem(
                product_id=i.product_id,
                variant_id=i.variant_id,
                options=i.options,
                sku=i.sku,
                name=i.name,
                quantity=i.quantity,
                unit_price=i.unit_price,
                line_total=i.line_total,
            )
            for i in order.items
        ],
        subtotal=order.subtotal,
        discount=order.discount,
        tax=order.tax,
        total=order.total,
        currency=order.currency,
        created_at=timestamp(order.created_at),
        updated_at=timestamp(order.updated_at),
    )
    if order.promotion_code is not None:
        message.promotion_code = order.promotion_code
    if order.reserved_until is not None:
        message.reserved_until.CopyFrom(timestamp(order.reserved_until))
    if order.note is not None:
        message.note = order.note
    address = order.shipping_address
    if address is not None:
        message.shipping_address.CopyFrom(
            orders_pb2.ShippingAddress(
                name=address.name,
                line1=address.line1,
                line2=address.line2,
                city=address.city,
                postal_code=address.postal_code,
                country=address.country,
            )
        )
    return message


def _item_input(item: common_pb2.CartItem) -> dict[str, Any]:
    """Proto3 defaults (0, empty map) mean "not given"."""
    data: dict[str, Any] = {"quantity": item.quantity}
    if item.product_id:
        data["product_id"] = item.product_id
    if item.HasField("variant_id"):
        data["variant_id"] = item.variant_id
    if item.options:
        data["options"] = dict(item.options)
    return data


def _create_input(request: orders_pb2.CreateOrderRequest) -> dict[str, Any]:
    """The request as the plain data `orders.parse_order_input` validates."""
    data: dict[str, Any] = {
        "items": [_item_input(i) for i in request.items],
    }
    if request.HasField("promotion_code"):
        data["promotion_code"] = request.promotion_code
    if request.HasField("note"):
        data["note"] = request.note
    if request.HasField("shipping_address"):
        address = request.shipping_address
        data["shipping_address"] = {
            "name": address.name,
            "line1": address.line1,
            "city": address.city,
            "postal_code": address.postal_code,
            "country": address.country,
            **({"line2": address.line2} if address.HasField("line2") else {}),
        }
    return data


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @translate_errors
    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        principal = await auth.require_principal(context)
        order_input = orders.parse_order_input(_create_input(request))
        key = orders.idempotency_key(
            request.idempotency_key or None,
            "GRPC",
            CREATE_ORDER_METHOD,
            msgspec.to_builtins(order_input),
        )
        placement = await orders.create_order(self.ctx, principal, order_input, key)
        if placement.replayed:
            await context.send_initial_metadata((("idempotent-replayed", "true"),))
        if placement.error is not None:
            raise placement.error
        assert placement.order is not None
        return order_message(placement.order)

    @translate_errors
    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        principal = await auth.require_principal(context)
        return order_message(await orders.get_order(self.ctx, principal, request.id))

    @translate_errors
    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        principal = await auth.require_principal(context)
        page = await orders.list_orders(
            self.ctx,
            principal,
            user_id=request.user_id if request.HasField("user_id") else None,
            status=_status_name(request.status) if request.status else None,
            cursor=request.page.cursor or None,
            limit=request.page.limit or orders.DEFAULT_PAGE,
        )
        return orders_pb2.ListOrdersResponse(
            items=[order_message(o) for o in page.items], next_cursor=page.next_cursor or ""
        )

    @translate_errors
    async def UpdateOrderStatus(
        self, request: orders_pb2.UpdateOrderStatusRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        principal = await auth.require_principal(context)
        order = await orders.change_status(
            self.ctx, principal, request.id, _status_name(request.status)
        )
        return order_message(order)


SERVICE = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
# Who may call each method (services/permissions.py), checked by the AuthInterceptor; `owner`:
# the orders service shows a customer only their own orders.
ACCESS = {
    f"/{SERVICE}/CreateOrder": "user",
    f"/{SERVICE}/GetOrder": "owner",
    f"/{SERVICE}/ListOrders": "owner",
    f"/{SERVICE}/UpdateOrderStatus": "staff",
}


def register(server: grpc.aio.Server, ctx: AppContext) -> Sequence[str]:
    orders_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(ctx), server)
    return [SERVICE]
