"""storefront.v1.WebhookService: the gRPC twin of REST /webhooks (admin only), over the same
service functions (server.services.webhooks)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from server.context import AppContext
from server.rpc.common import timestamp, validated
from server.rpc.errors import translate_errors
from server.rpc.pb.storefront.v1 import webhooks_pb2, webhooks_pb2_grpc
from server.services import webhooks
from server.services.webhooks import (
    DeliveryView,
    SubscriptionCreate,
    SubscriptionUpdate,
    SubscriptionView,
)

_STATUS: dict[str, webhooks_pb2.DeliveryStatus] = {
    "pending": webhooks_pb2.DELIVERY_STATUS_PENDING,
    "sending": webhooks_pb2.DELIVERY_STATUS_SENDING,
    "succeeded": webhooks_pb2.DELIVERY_STATUS_SUCCEEDED,
    "dead": webhooks_pb2.DELIVERY_STATUS_DEAD,
}


def subscription_message(subscription: SubscriptionView) -> webhooks_pb2.Subscription:
    message = webhooks_pb2.Subscription(
        id=subscription.id,
        url=subscription.url,
        events=subscription.events,
        secret=subscription.secret,
        is_active=subscription.is_active,
        consecutive_failures=subscription.consecutive_failures,
        created_at=timestamp(subscription.created_at),
        updated_at=timestamp(subscription.updated_at),
    )
    if subscription.disabled_at is not None:
        message.disabled_at.CopyFrom(timestamp(subscription.disabled_at))
    return message


def delivery_message(delivery: DeliveryView) -> webhooks_pb2.Delivery:
    message = webhooks_pb2.Delivery(
        id=delivery.id,
        subscription_id=delivery.subscription_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=_STATUS.get(delivery.status, webhooks_pb2.DELIVERY_STATUS_UNSPECIFIED),
        attempts=delivery.attempts,
        next_attempt_at=timestamp(delivery.next_attempt_at),
        created_at=timestamp(delivery.created_at),
    )
    if delivery.last_status_code is not None:
        message.last_status_code = delivery.last_status_code
    if delivery.last_error is not None:
        message.last_error = delivery.last_error
    if delivery.delivered_at is not None:
        message.delivered_at.CopyFrom(timestamp(delivery.delivered_at))
    return message


def _update_input(request: webhooks_pb2.UpdateSubscriptionRequest) -> dict[str, object]:
    """Only the fields the caller set, as a REST PATCH body would carry them."""
    data: dict[str, object] = {}
    if request.HasField("url"):
        data["url"] = request.url
    if request.HasField("events"):
        data["events"] = list(request.events.types)
    if request.HasField("secret"):
        data["secret"] = request.secret
    if request.HasField("is_active"):
        data["is_active"] = request.is_active
    return data


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    @translate_errors
    async def CreateSubscription(
        self, request: webhooks_pb2.CreateSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.Subscription:
        fields: dict[str, object] = {"url": request.url, "events": list(request.events)}
        if request.HasField("secret"):
            fields["secret"] = request.secret
        data = validated(fields, SubscriptionCreate)
        return subscription_message(await webhooks.create(self.ctx, data))

    @translate_errors
    async def ListSubscriptions(
        self, request: webhooks_pb2.ListSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.ListSubscriptionsResponse:
        found = await webhooks.list_all(self.ctx)
        return webhooks_pb2.ListSubscriptionsResponse(
            items=[subscription_message(s) for s in found.items]
        )

    @translate_errors
    async def GetSubscription(
        self, request: webhooks_pb2.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.Subscription:
        return subscription_message(await webhooks.get(self.ctx, request.id))

    @translate_errors
    async def UpdateSubscription(
        self, request: webhooks_pb2.UpdateSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.Subscription:
        data = validated(_update_input(request), SubscriptionUpdate)
        return subscription_message(await webhooks.update(self.ctx, request.id, data))

    @translate_errors
    async def DeleteSubscription(
        self, request: webhooks_pb2.DeleteSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.DeleteSubscriptionResponse:
        await webhooks.delete(self.ctx, request.id)
        return webhooks_pb2.DeleteSubscriptionResponse()

    @translate_errors
    async def ListDeliveries(
        self, request: webhooks_pb2.ListDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.ListDeliveriesResponse:
        cursor = request.page.cursor
        page = await webhooks.deliveries(
            self.ctx,
            request.subscription_id,
            cursor=webhooks.decode_cursor(cursor) if cursor else None,
            limit=request.page.limit or webhooks.DEFAULT_PAGE,
        )
        return webhooks_pb2.ListDeliveriesResponse(
            items=[delivery_message(d) for d in page.items], next_cursor=page.next_cursor or ""
        )

    @translate_errors
    async def Redeliver(
        self, request: webhooks_pb2.RedeliverRequest, context: grpc.aio.ServicerContext
    ) -> webhooks_pb2.Delivery:
        again = await webhooks.redeliver(self.ctx, request.subscription_id, request.delivery_id)
        return delivery_message(again)


SERVICE = webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name
# Who may call each method (services/permissions.py), checked by the AuthInterceptor: admins
# only, as REST /webhooks (the secrets are in the answers).
ACCESS = {
    f"/{SERVICE}/CreateSubscription": "admin",
    f"/{SERVICE}/ListSubscriptions": "admin",
    f"/{SERVICE}/GetSubscription": "admin",
    f"/{SERVICE}/UpdateSubscription": "admin",
    f"/{SERVICE}/DeleteSubscription": "admin",
    f"/{SERVICE}/ListDeliveries": "admin",
    f"/{SERVICE}/Redeliver": "admin",
}


def register(server: grpc.aio.Server, ctx: AppContext) -> Sequence[str]:
    webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(ctx), server)
    return [SERVICE]
