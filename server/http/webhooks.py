"""REST webhook subscriptions (admin): CRUD, the delivery log, manual redelivery."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from server.http.base import ApiHandler
from server.http.catalog import resource_id
from server.openapi import Operation, Param, read_query
from server.services import webhooks
from server.services.webhooks import (
    DeliveryPage,
    DeliveryView,
    SubscriptionCreate,
    SubscriptionList,
    SubscriptionUpdate,
    SubscriptionView,
)

_SIGNING = (
    "Each delivery is a POST of `{id, type, data}` with `Storefront-Signature: t=<unix>,v1=<hex>` "
    "(HMAC-SHA256 with the subscription's secret over `<t>.<body>`; check it and that `t` is "
    "recent), `Storefront-Event`, `Storefront-Event-Id` (dedupe on it: delivery is at least "
    "once) and `Storefront-Delivery`. A 2xx answer counts as delivered; anything else, "
    "redirects included (never followed), is retried with exponential backoff and jitter; "
    "`WEBHOOK_MAX_FAILURES` failures in a row (default 10) disable the subscription. In "
    "production the URL must be https and resolve to public addresses only (422 otherwise)."
)
PAGE_PARAMS = (
    Param(
        "limit",
        int,
        "Page size.",
        minimum=1,
        maximum=webhooks.MAX_PAGE,
        default=webhooks.DEFAULT_PAGE,
    ),
    Param("cursor", int, "`next_cursor` of the previous page.", minimum=1),
)


def _send(handler: ApiHandler, body: bytes, status: int = 200) -> None:
    handler.set_header("Cache-Control", "private, no-store")  # secrets inside
    handler.send_json(body, status)


class SubscriptionsHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "admin", "POST": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation("List webhook subscriptions", response=SubscriptionList),
        "POST": Operation(
            "Subscribe a URL to events",
            request=SubscriptionCreate,
            response=SubscriptionView,
            status=201,
            description="Without `secret`, one is generated. " + _SIGNING,
        ),
    }

    async def get(self) -> None:
        _send(self, msgspec.json.encode(await webhooks.list_all(self.ctx)))

    async def post(self) -> None:
        data = self.parse_body(SubscriptionCreate)
        _send(self, msgspec.json.encode(await webhooks.create(self.ctx, data)), 201)


class SubscriptionHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "admin", "PATCH": "admin", "DELETE": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation("Get a webhook subscription", response=SubscriptionView),
        "PATCH": Operation(
            "Change a webhook subscription",
            request=SubscriptionUpdate,
            response=SubscriptionView,
            description="`is_active: true` re-enables a disabled subscription.",
        ),
        "DELETE": Operation("Delete a webhook subscription and its log", status=204),
    }

    async def get(self, subscription_id: str) -> None:
        found = await webhooks.get(self.ctx, resource_id(subscription_id, "subscription"))
        _send(self, msgspec.json.encode(found))

    async def patch(self, subscription_id: str) -> None:
        data = self.parse_body(SubscriptionUpdate)
        changed = await webhooks.update(
            self.ctx, resource_id(subscription_id, "subscription"), data
        )
        _send(self, msgspec.json.encode(changed))

    async def delete(self, subscription_id: str) -> None:
        await webhooks.delete(self.ctx, resource_id(subscription_id, "subscription"))
        self.send_empty(204)


class DeliveriesHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "A subscription's delivery log",
            response=DeliveryPage,
            query=PAGE_PARAMS,
            description="Newest first: status (pending, sending, succeeded, dead), attempts, "
            "the last response code and error, the next attempt.",
        ),
    }

    async def get(self, subscription_id: str) -> None:
        query = read_query(self, PAGE_PARAMS)
        page = await webhooks.deliveries(
            self.ctx,
            resource_id(subscription_id, "subscription"),
            cursor=query["cursor"],
            limit=query["limit"],
        )
        _send(self, msgspec.json.encode(page))


class RedeliverHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "admin"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Deliver an event again",
            response=DeliveryView,
            status=202,
            description="Queues the delivery again now, with a fresh attempt budget.",
        ),
    }

    async def post(self, subscription_id: str, delivery_id: str) -> None:
        again = await webhooks.redeliver(
            self.ctx,
            resource_id(subscription_id, "subscription"),
            resource_id(delivery_id, "delivery"),
        )
        _send(self, msgspec.json.encode(again), 202)


_SUB = r"(?P<subscription_id>[0-9]+)"

routes = [
    (r"/api/v1/webhooks/?", SubscriptionsHandler),
    (rf"/api/v1/webhooks/{_SUB}/?", SubscriptionHandler),
    (rf"/api/v1/webhooks/{_SUB}/deliveries/?", DeliveriesHandler),
    (rf"/api/v1/webhooks/{_SUB}/deliveries/(?P<delivery_id>[0-9]+)/redeliver/?", RedeliverHandler),
]
