"""Orders: checkout, idempotency, the order state machine and expiry — every order rule, once.

REST and gRPC both come through here, so they cannot disagree about who may see an order, what
a checkout takes from stock, or which status moves are legal. One module per concern:
model (the order and its inputs), checkout, idempotency, notifications (the e-mails), reading,
status (the state machine and expiry).
"""

from server.services.orders.checkout import checkout_cart, create_order, place_order
from server.services.orders.idempotency import IdempotencyKey, Placement, idempotency_key
from server.services.orders.model import (
    DEFAULT_PAGE,
    MAX_PAGE,
    ORDER_STATUSES,
    Order,
    OrderDetails,
    OrderInput,
    OrderItem,
    OrderPage,
    OrderStatus,
    ShippingAddress,
    parse_order_input,
)
from server.services.orders.reading import get_order, list_orders
from server.services.orders.status import cancel_expired_unpaid, cancel_order, change_status

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "ORDER_STATUSES",
    "IdempotencyKey",
    "Order",
    "OrderDetails",
    "OrderInput",
    "OrderItem",
    "OrderPage",
    "OrderStatus",
    "Placement",
    "ShippingAddress",
    "cancel_expired_unpaid",
    "cancel_order",
    "change_status",
    "checkout_cart",
    "create_order",
    "get_order",
    "idempotency_key",
    "list_orders",
    "parse_order_input",
    "place_order",
]
