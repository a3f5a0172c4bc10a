"""The daily cleanup job against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

from server.context import AppContext
from server.db.maintenance import purge_expired
from tests.conftest import wait_for
from tests.orders_support import Accounts


async def add_refresh_token(
    ctx: AppContext, user_id: int, expires_in: str, used: bool = False
) -> uuid.UUID:
    jti = uuid.uuid4()
    await ctx.pool.execute(
        """INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at, used_at)
           VALUES ($1, $2, $3, now() + $4::text::interval,
                   CASE WHEN $5 THEN now() END)""",
        jti,
        uuid.uuid4(),
        user_id,
        expires_in,
        used,
    )
    return jti


async def add_idempotency_key(ctx: AppContext, user_id: int, expires_in: str) -> str:
    key = uuid.uuid4().hex
    await ctx.pool.execute(
        """INSERT INTO idempotency_keys (user_id, key, request_hash, expires_at)
           VALUES ($1, $2, 'h', now() + $3::text::interval)""",
        user_id,
        key,
        expires_in,
    )
    return key


async def add_outbox(ctx: AppContext, status: str, sent_ago: str | None) -> int:
    outbox_id: int = await ctx.pool.fetchval(
        """INSERT INTO outbox (kind, recipient, subject, body, status, sent_at)
           VALUES ('order_confirmation', 'a@example.com', 's', 'b', $1,
                   now() - $2::text::interval) RETURNING id""",
        status,
        sent_ago,
    )
    return outbox_id


async def add_subscription(ctx: AppContext, *, active: bool = True) -> int:
    subscription_id: int = await ctx.pool.fetchval(
        """INSERT INTO webhook_subscriptions (url, event_types, secret, is_active)
           VALUES ('http://127.0.0.1:9/hook', '{order.created}', 'a-secret-of-16-chars', $1)
           RETURNING id""",
        active,
    )
    return subscription_id


async def add_event(ctx: AppContext, created_ago: str, deliveries: dict[int, str]) -> int:
    """An event `created_ago` with a delivery per subscription id, in the given status."""
    event_id: int = await ctx.pool.fetchval(
        """INSERT INTO events (type, payload, created_at)
           VALUES ('order.created', '{}', now() - $1::text::interval) RETURNING id""",
        created_ago,
    )
    for subscription_id, status in deliveries.items():
        await ctx.pool.execute(
            """INSERT INTO webhook_deliveries (subscription_id, event_id, status, created_at)
               VALUES ($1, $2, $3, now() - $4::text::interval)""",
            subscription_id,
            event_id,
            status,
            created_ago,
        )
    return event_id


async def test_cleanup_deletes_old_events_whose_deliveries_are_all_finished(
    ctx: AppContext,
) -> None:
    first, second = await add_subscription(ctx), await add_subscription(ctx)
    disabled = await add_subscription(ctx, active=False)
    old_delivered = await add_event(ctx, "31 days", {first: "succeeded", second: "dead"})
    old_unheard = await add_event(ctx, "31 days", {})
    old_half_done = await add_event(ctx, "31 days", {first: "succeeded", second: "pending"})
    old_in_flight = await add_event(ctx, "31 days", {first: "sending"})
    # Re-enabling the subscription sends its backlog, however old.
    old_backlog = await add_event(ctx, "45 days", {disabled: "pending"})
    recent_delivered = await add_event(ctx, "29 days", {first: "succeeded"})

    deleted = await purge_expired(ctx.pool)

    assert deleted["events"] >= 2
    events = {r["id"] for r in await ctx.pool.fetch("SELECT id FROM events")}
    assert not events & {old_delivered, old_unheard}
    assert {old_half_done, old_in_flight, old_backlog, recent_delivered} <= events
    kept = await ctx.pool.fetch(
        "SELECT event_id, status FROM webhook_deliveries WHERE event_id = ANY($1::bigint[])",
        [old_delivered, old_half_done, old_backlog],
    )
    assert sorted((r["event_id"], r["status"]) for r in kept) == [
        (old_half_done, "pending"),
        (old_half_done, "succeeded"),
        (old_backlog, "pending"),
    ]


async def test_cleanup_deletes_only_what_expired(ctx: AppContext) -> None:
    user, _ = await Accounts(ctx).create()
    expired = [
        await add_refresh_token(ctx, user.id, "-1 minute"),
        await add_refresh_token(ctx, user.id, "-3 days", used=True),
    ]
    live = [
        await add_refresh_token(ctx, user.id, "7 days"),
        await add_refresh_token(ctx, user.id, "1 day", used=True),
    ]
    old_key = await add_idempotency_key(ctx, user.id, "-1 hour")
    live_key = await add_idempotency_key(ctx, user.id, "23 hours")
    old_sent = await add_outbox(ctx, "sent", "31 days")
    recent_sent = await add_outbox(ctx, "sent", "29 days")
    old_dead = await add_outbox(ctx, "dead", None)
    await ctx.pool.execute(
        "UPDATE outbox SET created_at = now() - interval '90 days' WHERE id = $1", old_dead
    )

    deleted = await purge_expired(ctx.pool)

    assert deleted["refresh_tokens"] >= 2 and deleted["idempotency_keys"] >= 1
    tokens = {r["jti"] for r in await ctx.pool.fetch("SELECT jti FROM refresh_tokens")}
    assert not tokens & set(expired) and set(live) <= tokens
    keys = {
        r["key"]
        for r in await ctx.pool.fetch(
            "SELECT key FROM idempotency_keys WHERE user_id = $1", user.id
        )
    }
    assert keys == {live_key} and old_key not in keys
    outbox = {r["id"] for r in await ctx.pool.fetch("SELECT id FROM outbox")}
    assert old_sent not in outbox and {recent_sent, old_dead} <= outbox


async def test_cleanup_works_in_batches_and_twice_at_once(ctx: AppContext) -> None:
    user, _ = await Accounts(ctx).create()
    await ctx.pool.execute(
        """INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at)
           SELECT gen_random_uuid(), gen_random_uuid(), $1, now() - interval '1 hour'
             FROM generate_series(1, 250)""",
        user.id,
    )
    survivor = await add_refresh_token(ctx, user.id, "1 hour")

    first, second = await asyncio.gather(
        purge_expired(ctx.pool, batch=7), purge_expired(ctx.pool, batch=7)
    )

    assert first["refresh_tokens"] + second["refresh_tokens"] == 250
    remaining = await ctx.pool.fetch("SELECT jti FROM refresh_tokens WHERE user_id = $1", user.id)
    assert [r["jti"] for r in remaining] == [survivor]
    assert await purge_expired(ctx.pool) == {
        "refresh_tokens": 0,
        "idempotency_keys": 0,
        "outbox": 0,
        "events": 0,
    }


async def test_old_events_go_in_batches_and_twice_at_once(ctx: AppContext) -> None:
    subscription = await add_subscription(ctx)
    await ctx.pool.execute(
        """WITH old AS (
               INSERT INTO events (type, payload, created_at)
               SELECT 'order.paid', '{}', now() - interval '40 days' FROM generate_series(1, 30)
               RETURNING id)
           INSERT INTO webhook_deliveries (subscription_id, event_id, status)
           SELECT $1, id, 'succeeded' FROM old""",
        subscription,
    )

    first, second = await asyncio.gather(
        purge_expired(ctx.pool, batch=7), purge_expired(ctx.pool, batch=7)
    )

    assert first["events"] + second["events"] == 30
    assert not await ctx.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = $1", subscription
    )


async def test_a_redelivery_while_the_cleanup_runs_keeps_its_event(ctx: AppContext) -> None:
    subscription = await add_subscription(ctx)
    event = await add_event(ctx, "60 days", {subscription: "dead"})
    async with ctx.pool.acquire() as admin:
        redelivery = admin.transaction()
        await redelivery.start()
        # What services/webhooks.redeliver does, not yet committed when the cleanup starts.
        await admin.execute(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0 WHERE event_id = $1",
            event,
        )
        cleanup = asyncio.ensure_future(purge_expired(ctx.pool))

        async def cleanup_waits() -> bool:
            return bool(
                await ctx.pool.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                        WHERE wait_event_type = 'Lock' AND query LIKE '%doomed%'"""
                )
            )

        await wait_for(cleanup_waits)
        await redelivery.commit()
        await cleanup

    statuses = await ctx.pool.fetch(
        "SELECT status FROM webhook_deliveries WHERE event_id = $1", event
    )
    assert [r["status"] for r in statuses] == ["pending"]
    assert await ctx.pool.fetchval("SELECT count(*) FROM events WHERE id = $1", event) == 1
