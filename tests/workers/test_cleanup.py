"""The daily cleanup job against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

from server.context import AppContext
from server.db.maintenance import purge_expired
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
    }
