"""Domain events: what integrators (webhooks) and live streams hear about.

`emit(conn, type, data, live=...)` runs inside the transaction of the change: the event row and
its webhook deliveries are written with it (the outbox), so they exist exactly when the change
does. Live messages and the "deliver now" nudge wait until that transaction has committed:
a service wraps its unit of work in `collecting(ctx)`, which publishes them on a clean exit
and drops them if the work raised (a rolled-back change is never announced).

Webhook event types: order.created, order.paid, order.shipped, order.delivered,
order.cancelled, order.refunded, product.updated, stock.low, refund.created.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from server.context import AppContext
from server.db import webhooks as webhooks_db
from server.db.catalog import Product

EVENT_TYPES = (
    "order.created",
    "order.paid",
    "order.shipped",
    "order.delivered",
    "order.cancelled",
    "order.refunded",
    "product.updated",
    "stock.low",
    "refund.created",
)


def order_topic(user_id: int) -> str:
    return f"order:{user_id}"


def product_topic(product_id: int) -> str:
    return f"product:{product_id}"


@dataclass
class Batch:
    """What a unit of work announces once it has committed."""

    deliveries: int = 0
    live: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


_batch: ContextVar[Batch | None] = ContextVar("storefront_event_batch", default=None)


async def emit(
    conn: asyncpg.Connection,
    event_type: str,
    data: dict[str, Any],
    *,
    live: Iterable[str] = (),
) -> None:
    """Record `event_type` in the caller's transaction (webhook deliveries included) and, after
    the commit, tell the `live` topics."""
    queued = await webhooks_db.emit(conn, event_type, data)
    batch = _batch.get()
    if batch is not None:
        batch.deliveries += queued
        batch.live.extend((topic, {"type": event_type, "data": data}) for topic in live)


def announce(topic: str, message_type: str, data: dict[str, Any]) -> None:
    """A live-only message (stock moved): no event row, sent after the commit."""
    batch = _batch.get()
    if batch is not None:
        batch.live.append((topic, {"type": message_type, "data": data}))


@contextlib.asynccontextmanager
async def collecting(ctx: AppContext) -> AsyncIterator[Batch]:
    """Collect the events of the unit of work in the block; publish them when it exits
    cleanly (after its transaction committed). Nested blocks join the outermost one."""
    outer = _batch.get()
    if outer is not None:
        yield outer
        return
    batch = Batch()
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
    await publish(ctx, batch)


async def publish(ctx: AppContext, batch: Batch) -> None:
    # Live messages first (a client is waiting on them), all stamped with the commit's time:
    # `sent_at` is what a client measures the delay from.
    committed_at = time.time()
    for topic, message in batch.live:
        await ctx.live.publish(topic, message, sent_at=committed_at)
    if batch.deliveries and ctx.jobs is not None:
        await ctx.jobs.deliver_webhooks()


async def announce_product(conn: asyncpg.Connection, product: Product) -> None:
    """product.updated for webhooks (the admin's view), and the public figures (price, stock,
    active variants) for the product's live stream."""
    visible = [v for v in product.variants if v.is_active]
    await emit(conn, "product.updated", msgspec.to_builtins(product))
    announce(
        product_topic(product.id),
        "product.updated",
        {
            "product_id": product.id,
            "price": product.price,
            "stock": product.stock,
            "is_active": product.is_active,
            "variants": [{"id": v.id, "price": v.price, "stock": v.stock} for v in visible],
        },
    )
