"""REST /orders: checkout of the cart, reading, cancelling and moving orders along their states.

Each handler parses, authorises, calls one function of server.services.orders and serialises.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from server.http.base import JSON_CONTENT_TYPE, ApiHandler
from server.openapi import Operation, Param, read_query
from server.services import orders
from server.services.orders import Order, OrderDetails, OrderPage

CHECKOUT_PATH = "/api/v1/orders"

_STATES = (
    "States: `pending → paid → shipped → delivered`; `pending → cancelled`; `paid → cancelled` "
    "(admin only, and only for an order not paid through the gateway: a captured payment is "
    "refunded instead); `→ refunded` when a refund gives back everything captured. Checkout "
    "holds the stock until `reserved_until` (`ORDER_PAYMENT_TIMEOUT`, default 30 min); paying "
    "commits it, cancelling gives it back, and a scheduled job cancels pending orders whose "
    "hold ran out (unless their payment is authorised)."
)
_CHECKOUT = (
    "Checks out the caller's cart (the lines `GET /cart` shows, with its promotion code) in one "
    "transaction: the stock of every line is taken atomically (never oversold), the lines are "
    "priced by the Rust engine (half-even per line, tax half-even once), `unit_price`, `sku` and "
    "`name` are snapshotted, the promotion use is counted, and the cart is emptied. The order "
    "starts `pending`.\n\n"
    "**409** when stock is short: `errors` names every short line as `items.<variant_id>` (with "
    "`product_id`, `variant_id`, `requested`, `available`). "
    "**422** when the cart is empty, or its promotion is unknown, expired, not started, used up "
    "or below its minimum subtotal (`errors[].field` = `promotion_code`).\n\n"
    "**Idempotency-Key** (header, 1 to 255 printable characters, scoped to the caller, kept 24 h) "
    "is strongly recommended. A retry with the same key and the same body returns the first "
    "response (status and body, the order as it was then) with `Idempotent-Replayed: true`; "
    "that includes a 409 or 422 the first request got — send a new key once you changed the "
    "cart. The same key with another body → 422; while the first request still runs → 409. A "
    "request that failed without an answer (server error) frees its key for a retry."
)

LIST_PARAMS = (
    Param("status", description="Only orders in this state.", enum=orders.ORDER_STATUSES),
    Param(
        "user_id",
        int,
        "Admins and services: only this user's orders. A customer may pass "
        "only their own id (403 otherwise).",
        minimum=1,
    ),
    Param(
        "limit", int, "Page size.", minimum=1, maximum=orders.MAX_PAGE, default=orders.DEFAULT_PAGE
    ),
    Param("cursor", description="`next_cursor` of the previous page.", max_length=200),
)


class StatusChange(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    status: Literal["pending", "paid", "shipped", "delivered", "cancelled"]


def _send_private(handler: ApiHandler, body: bytes, status: int = 200) -> None:
    # Someone's orders: never stored by shared caches or the browser.
    handler.set_header("Cache-Control", "private, no-store")
    handler.send_json(body, status)


def _send_order(handler: ApiHandler, order: Order) -> None:
    _send_private(handler, msgspec.json.encode(order))


class OrdersHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "user", "POST": "user"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "List orders",
            response=OrderPage,
            query=LIST_PARAMS,
            errors=(403,),
            description="The caller's own orders, newest first (admins and services: every "
            "order, or one user's with `user_id`). Cursor pagination.",
        ),
        "POST": Operation(
            "Check out the cart",
            request=OrderDetails,
            response=Order,
            status=201,
            errors=(409,),
            description=_CHECKOUT,
            headers={
                "Location": "URL of the new order",
                "Idempotent-Replayed": "`true` when this is the stored answer of an "
                "earlier request with the same Idempotency-Key",
            },
        ),
    }

    async def get(self) -> None:
        principal = self.caller
        query = read_query(self, LIST_PARAMS)
        page = await orders.list_orders(
            self.ctx,
            principal,
            user_id=query["user_id"],
            status=query["status"],
            cursor=query["cursor"],
            limit=query["limit"],
        )
        _send_private(self, msgspec.json.encode(page))

    async def post(self) -> None:
        principal = self.caller
        details = self.parse_body(OrderDetails)
        key = orders.idempotency_key(
            self.request.headers.get("Idempotency-Key"),
            "POST",
            CHECKOUT_PATH,
            msgspec.to_builtins(details),
        )
        placement = await orders.checkout_cart(self.ctx, principal, details, key)
        answer_headers = {"Cache-Control": "private, no-store"}
        if placement.replayed:
            answer_headers["Idempotent-Replayed"] = "true"
        if placement.error is not None:  # a stored refusal: the first answer again
            self.send_domain_error(placement.error, answer_headers)
            return
        assert placement.order is not None
        for name, value in answer_headers.items():
            self.set_header(name, value)
        self.set_header("Location", f"{CHECKOUT_PATH}/{placement.order.id}")
        self.set_status(201)
        self.set_header("Content-Type", JSON_CONTENT_TYPE)
        self.finish(placement.body)


class OrderHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "owner"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Get an order",
            response=Order,
            description="The owner, admins and services; anyone else gets 404.",
        ),
    }

    async def get(self, order_id: str) -> None:
        principal = self.caller
        _send_order(self, await orders.get_order(self.ctx, principal, int(order_id)))


class OrderCancelHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "owner"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Cancel an order",
            response=Order,
            errors=(409,),
            description="The owner while the order is `pending`; an admin while `pending` or "
            "`paid`. The stock comes back. 409 from any other state (and for an "
            "order already cancelled). " + _STATES,
        ),
    }

    async def post(self, order_id: str) -> None:
        principal = self.caller
        _send_order(self, await orders.cancel_order(self.ctx, principal, int(order_id)))


class OrderStatusHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"PATCH": "staff"}
    api: ClassVar[dict[str, Operation]] = {
        "PATCH": Operation(
            "Change an order's status",
            request=StatusChange,
            response=Order,
            errors=(409,),
            description="Admins and services. 409 on a move the state machine does not allow "
            "(including `paid → cancelled` by a service). " + _STATES,
        ),
    }

    async def patch(self, order_id: str) -> None:
        principal = self.caller
        change = self.parse_body(StatusChange)
        _send_order(
            self, await orders.change_status(self.ctx, principal, int(order_id), change.status)
        )


_ID = r"([0-9]{1,18})"

routes = [
    (r"/api/v1/orders/?", OrdersHandler),
    (rf"/api/v1/orders/{_ID}/?", OrderHandler),
    (rf"/api/v1/orders/{_ID}/cancel/?", OrderCancelHandler),
    (rf"/api/v1/orders/{_ID}/status/?", OrderStatusHandler),
]
