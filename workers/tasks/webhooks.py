"""Outbound webhook delivery: the pending deliveries `emit` queued (in the transaction of the
change), POSTed to each subscription's URL, signed, with retries.

- Body: `{"id": <event id>, "type": "order.created", "data": {...}}`. Headers:
  `Storefront-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>` (the
  receiver recomputes it and checks the timestamp is recent), `Storefront-Event`,
  `Storefront-Event-Id`, `Storefront-Delivery`.
- A 2xx answer is a success. Anything else (another status, a redirect, which is never
  followed, a timeout, a refused TLS certificate, a refused address) is a failure: retried
  after an exponential backoff with jitter (30 s doubling, up to 6 h, x0.5-1.5), `dead` after
  `max_attempts`. Each failure counts against the subscription; WEBHOOK_MAX_FAILURES in a row
  disable it (an admin re-enables it with PATCH is_active=true).
- Claiming sets a lease, so a worker that dies mid-delivery leaves the row to the next run
  (delivery is at least once; receivers dedupe on `Storefront-Event-Id`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass

import asyncpg
import orjson
import tornado.httpclient

from server import metrics
from server.config import Settings
from server.db import webhooks as webhooks_db
from server.db.webhooks import DueDelivery
from server.services.webhook_targets import PublicOnlyResolver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 30.0
    max_delay: float = 6 * 3600.0
    lease: float = 120.0
    batch: int = 50

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds before the next attempt after `attempts` failed ones (with jitter)."""
        base = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return base * (rng or random).uniform(0.5, 1.5)


@dataclass(frozen=True, slots=True)
class WebhookReport:
    succeeded: int = 0
    retrying: int = 0
    dead: int = 0


def signature(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def client_for(
    settings: Settings, policy: RetryPolicy | None = None
) -> tornado.httpclient.AsyncHTTPClient:
    """The delivery client: only public addresses unless private ones are allowed
    (development, testing), and room for a whole batch at once. Tornado's client runs 10
    requests at a time by default and times the rest out in its queue: a slow receiver would
    then fail (and in the end disable) subscriptions that were never even called."""
    batch = (policy or RetryPolicy()).batch
    resolver = None if settings.webhook_allow_private else PublicOnlyResolver()
    return tornado.httpclient.AsyncHTTPClient(
        force_instance=True, max_clients=batch, resolver=resolver
    )


def _discard(chunk: bytes) -> None:
    """A receiver's answer body is not needed (the status says it all), so none is kept: a
    receiver answering megabytes costs the worker no memory."""


async def _attempt(
    client: tornado.httpclient.AsyncHTTPClient, delivery: DueDelivery, seconds: float
) -> tuple[int | None, str | None]:
    """(status code, error): error is None on a 2xx."""
    body = orjson.dumps(
        {"id": delivery.event_id, "type": delivery.event_type, "data": delivery.payload}
    )
    request = tornado.httpclient.HTTPRequest(
        delivery.url,
        method="POST",
        body=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": "storefront-webhooks/1",
            "Storefront-Signature": signature(delivery.secret, body, int(time.time())),
            "Storefront-Event": delivery.event_type,
            "Storefront-Event-Id": str(delivery.event_id),
            "Storefront-Delivery": str(delivery.id),
        },
        follow_redirects=False,
        connect_timeout=seconds,
        request_timeout=seconds,
        validate_cert=True,
        streaming_callback=_discard,
    )
    try:
        response = await client.fetch(request, raise_error=False)
    except Exception as exc:  # TLS refused, DNS, connection refused, address refused
        return None, f"{type(exc).__name__}: {exc}"
    if response.code == 599:
        return None, f"no answer: {response.error}"
    if 200 <= response.code < 300:
        return response.code, None
    return response.code, f"answered {response.code}"


async def deliver_due(
    pool: asyncpg.Pool,
    settings: Settings,
    policy: RetryPolicy = RetryPolicy(),
    client: tornado.httpclient.AsyncHTTPClient | None = None,
) -> WebhookReport:
    """Deliver every due delivery (in batches, concurrently within a batch)."""
    own_client = client is None
    client = client or client_for(settings, policy)
    try:
        return await _deliver_batches(pool, settings, policy, client)
    finally:
        if own_client:
            client.close()


async def _deliver_batches(
    pool: asyncpg.Pool,
    settings: Settings,
    policy: RetryPolicy,
    client: tornado.httpclient.AsyncHTTPClient,
) -> WebhookReport:
    succeeded = retrying = dead = 0
    while True:
        due = await webhooks_db.claim_due(pool, policy.batch, policy.lease)
        if not due:
            break
        outcomes = await asyncio.gather(
            *(_attempt(client, d, settings.webhook_timeout) for d in due)
        )
        for delivery, (code, error) in zip(due, outcomes, strict=True):
            if error is None:
                assert code is not None
                await webhooks_db.record_success(pool, delivery.id, code)
                succeeded += 1
                metrics.WEBHOOK_DELIVERIES.labels("succeeded").inc()
                continue
            retry_in = (
                policy.delay(delivery.attempts) if delivery.attempts < policy.max_attempts else None
            )
            disabled = await webhooks_db.record_failure(
                pool,
                delivery.id,
                status_code=code,
                error=error,
                retry_in=retry_in,
                disable_after=settings.webhook_max_failures,
            )
            if retry_in is None:
                dead += 1
            else:
                retrying += 1
            metrics.WEBHOOK_DELIVERIES.labels("retry" if retry_in is not None else "dead").inc()
            if disabled:
                metrics.WEBHOOK_DELIVERIES.labels("disabled").inc()
                log.warning(
                    "webhook subscription %d disabled after %d failures in a row (last: %s)",
                    delivery.subscription_id,
                    settings.webhook_max_failures,
                    error,
                )
        if len(due) < policy.batch:
            break
    return WebhookReport(succeeded, retrying, dead)
