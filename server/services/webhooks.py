"""Webhook subscriptions (admin): where events go, which ones, and with which secret; the
delivery log and manual redelivery. Delivery itself is workers/tasks/webhooks.py's.

- `events` are types from services/events.EVENT_TYPES; `secret` (16..200 characters) signs each
  delivery, generated (`whsec_...`) when absent and shown to admins.
- The URL passes the SSRF guard (services/webhook_targets.py): in production https only and
  public addresses only.
- PATCH `is_active: true` re-enables a subscription the failures disabled (its count restarts).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from server.context import AppContext
from server.db import webhooks as repo
from server.db.webhooks import Delivery, Subscription
from server.domain.errors import BadRequest, FieldError, NotFound
from server.domain.values import END
from server.services.webhook_targets import check_target

EventType = Literal[
    "order.created",
    "order.paid",
    "order.shipped",
    "order.delivered",
    "order.cancelled",
    "order.refunded",
    "product.updated",
    "stock.low",
    "refund.created",
]
# What services/webhook_targets.check_target needs, stated for clients: printable ASCII (an IDN
# host in its xn-- form), a host name or IPv4 address (IPv6 literals are not taken, a DNS name
# is), no credentials, a port in range. ASCII classes only: JSON Schema's regex dialect and
# Python's disagree on what `\s` covers.
_PORT = "6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}"
_URL = f"^https?://[A-Za-z0-9._~%!$&'()*+,;=-]+(:({_PORT}))?([/?#][\\x21-\\x7e]*)?{END}"
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=_URL)]
Secret = Annotated[
    str, msgspec.Meta(min_length=16, max_length=200, pattern="^[\\x21-\\x7e]+" + END)
]
EventTypes = Annotated[
    list[EventType],
    msgspec.Meta(min_length=1, max_length=9, extra_json_schema={"uniqueItems": True}),
]
DEFAULT_PAGE = 20
MAX_PAGE = 100


class SubscriptionCreate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Url
    events: EventTypes
    secret: Secret | None = None


class SubscriptionUpdate(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Url | msgspec.UnsetType = msgspec.UNSET
    events: EventTypes | msgspec.UnsetType = msgspec.UNSET
    secret: Secret | msgspec.UnsetType = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET


class SubscriptionView(msgspec.Struct, frozen=True):
    id: int
    url: str
    events: list[str]
    secret: str
    is_active: bool
    consecutive_failures: int
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SubscriptionList(msgspec.Struct, frozen=True):
    items: list[SubscriptionView]


class DeliveryView(msgspec.Struct, frozen=True):
    id: int
    subscription_id: int
    event_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(msgspec.Struct, frozen=True):
    items: list[DeliveryView]
    next_cursor: str | None


def view(subscription: Subscription) -> SubscriptionView:
    return SubscriptionView(
        subscription.id,
        subscription.url,
        subscription.event_types,
        subscription.secret,
        subscription.is_active,
        subscription.consecutive_failures,
        subscription.disabled_at,
        subscription.created_at,
        subscription.updated_at,
    )


def delivery_view(delivery: Delivery) -> DeliveryView:
    return DeliveryView(**msgspec.structs.asdict(delivery))


async def _checked_url(ctx: AppContext, url: str) -> str:
    settings = ctx.settings
    return await check_target(
        url,
        allow_private=settings.webhook_allow_private,
        require_https=settings.is_production,
    )


async def create(ctx: AppContext, data: SubscriptionCreate) -> SubscriptionView:
    url = await _checked_url(ctx, data.url)
    secret = data.secret or "whsec_" + secrets.token_urlsafe(32)
    events = list(dict.fromkeys(data.events))
    return view(await repo.insert_subscription(ctx.pool, url, events, secret))


async def list_all(ctx: AppContext) -> SubscriptionList:
    return SubscriptionList([view(s) for s in await repo.list_subscriptions(ctx.pool)])


async def get(ctx: AppContext, subscription_id: int) -> SubscriptionView:
    found = await repo.get_subscription(ctx.pool, subscription_id)
    if found is None:
        raise NotFound("no such webhook subscription")
    return view(found)


async def update(
    ctx: AppContext, subscription_id: int, data: SubscriptionUpdate
) -> SubscriptionView:
    changes: dict[str, object] = {}
    if data.url is not msgspec.UNSET:
        changes["url"] = await _checked_url(ctx, data.url)
    if data.events is not msgspec.UNSET:
        changes["event_types"] = list(dict.fromkeys(data.events))
    if data.secret is not msgspec.UNSET:
        changes["secret"] = data.secret
    if data.is_active is not msgspec.UNSET:
        changes["is_active"] = data.is_active
        if data.is_active:
            changes["consecutive_failures"] = 0
            changes["disabled_at"] = None
    if not changes:
        return await get(ctx, subscription_id)
    updated = await repo.update_subscription(ctx.pool, subscription_id, changes)
    if updated is None:
        raise NotFound("no such webhook subscription")
    return view(updated)


async def delete(ctx: AppContext, subscription_id: int) -> None:
    if not await repo.delete_subscription(ctx.pool, subscription_id):
        raise NotFound("no such webhook subscription")


def decode_cursor(cursor: str) -> int:
    """A delivery log's `next_cursor` (the last delivery id shown), as `deliveries` takes it."""
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 18 or int(cursor) < 1:
        raise BadRequest(
            "the cursor is invalid; pass back a next_cursor unchanged",
            errors=[FieldError("cursor", "not a cursor of this list")],
        )
    return int(cursor)


async def deliveries(
    ctx: AppContext, subscription_id: int, *, cursor: int | None, limit: int
) -> DeliveryPage:
    # Query-style inputs (REST checks them as it reads the query; gRPC sends them as they are).
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(
            "invalid query parameter 'limit'",
            errors=[FieldError("limit", f"between 1 and {MAX_PAGE}")],
        )
    if cursor is not None and cursor < 1:
        raise BadRequest(
            "invalid query parameter 'cursor'", errors=[FieldError("cursor", "at least 1")]
        )
    await get(ctx, subscription_id)
    rows = await repo.deliveries_of(ctx.pool, subscription_id, before_id=cursor, limit=limit + 1)
    page = rows[:limit]
    next_cursor = str(page[-1].id) if len(rows) > limit else None
    return DeliveryPage([delivery_view(d) for d in page], next_cursor)


async def redeliver(ctx: AppContext, subscription_id: int, delivery_id: int) -> DeliveryView:
    """Queue a delivery again now (a fresh attempt budget) and nudge the delivery job."""
    again = await repo.redeliver(ctx.pool, subscription_id, delivery_id)
    if again is None:
        raise NotFound("no such delivery of this subscription (or it is being sent right now)")
    if ctx.jobs is not None:
        await ctx.jobs.deliver_webhooks()
    return delivery_view(again)
