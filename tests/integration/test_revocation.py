"""Refresh-token families revoked on one gateway are refused at once by another (Redis mirror),
and PostgreSQL stays the source of truth when Redis is gone."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from server.context import AppContext
from server.services.revocations import family_key
from tests.conftest import ApiClient, RedisServer, UserFactory, running_gateway
from tests.refresh_race_support import rotation_held, wait_for_lock_waiters

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
PASSWORD = "correct horse battery"


async def sign_in(api: ApiClient, ctx: AppContext) -> dict[str, str]:
    user, _ = await UserFactory(ctx).create(password=PASSWORD)
    response = await api.post(LOGIN, json={"email": user.email, "password": PASSWORD})
    assert response.status == 200, response
    grant: dict[str, str] = response.json()
    return grant


async def test_a_reuse_seen_by_one_gateway_revokes_the_family_everywhere(
    database_url: str, redis_url: str, http_impl: str
) -> None:
    async with (
        running_gateway(database_url, http_impl, REDIS_URL=redis_url) as (a, ctx),
        running_gateway(database_url, http_impl, REDIS_URL=redis_url) as (b, _),
    ):
        first = (await sign_in(a, ctx))["refresh"]
        second = (await a.post(REFRESH, json={"refresh": first})).json()["refresh"]

        assert (await b.post(REFRESH, json={"refresh": first})).status == 401  # the replay

        family = ctx.tokens.verify_refresh(second).family_id
        redis = Redis.from_url(redis_url)
        try:
            ttl = await redis.ttl(family_key(family))
        finally:
            await redis.aclose()
        assert 0 < ttl <= ctx.settings.refresh_token_ttl
        assert (await a.post(REFRESH, json={"refresh": second})).status == 401


async def test_logout_on_one_gateway_is_seen_by_the_other(
    database_url: str, redis_url: str, http_impl: str
) -> None:
    async with (
        running_gateway(database_url, http_impl, REDIS_URL=redis_url) as (a, ctx),
        running_gateway(database_url, http_impl, REDIS_URL=redis_url) as (b, _),
    ):
        grant = await sign_in(a, ctx)
        logout = await a.post(
            "/api/v1/auth/logout", json={"refresh": grant["refresh"]}, token=grant["access"]
        )
        assert logout.status == 204
        assert (await b.post(REFRESH, json={"refresh": grant["refresh"]})).status == 401


async def test_redis_is_asked_before_postgresql(
    database_url: str, redis_url: str, http_impl: str
) -> None:
    async with running_gateway(database_url, http_impl, REDIS_URL=redis_url) as (api, ctx):
        grant = await sign_in(api, ctx)
        family = ctx.tokens.verify_refresh(grant["refresh"]).family_id
        # Only Redis knows about this revocation (as right after another process revoked it).
        assert ctx.redis is not None
        await ctx.redis.set(family_key(family), b"1", ex=60)

        assert (await api.post(REFRESH, json={"refresh": grant["refresh"]})).status == 401
        used = await ctx.pool.fetchval(
            "SELECT used_at FROM refresh_tokens WHERE family_id = $1", family
        )
        assert used is None  # refused before the token was even consumed


async def test_postgresql_still_refuses_reuse_while_redis_is_down(
    database_url: str, redis_url: str, redis_server: RedisServer, http_impl: str
) -> None:
    async with running_gateway(database_url, http_impl, REDIS_URL=redis_url) as (api, ctx):
        first = (await sign_in(api, ctx))["refresh"]
        redis_server.stop()
        try:
            rotated = await api.post(REFRESH, json={"refresh": first})
            assert rotated.status == 200
            assert (await api.post(REFRESH, json={"refresh": first})).status == 401
            second = rotated.json()["refresh"]
            assert (await api.post(REFRESH, json={"refresh": second})).status == 401
        finally:
            redis_server.start()


async def test_a_logout_racing_a_refresh_is_complete_in_postgresql_while_redis_is_down(
    database_url: str, redis_url: str, redis_server: RedisServer, http_impl: str
) -> None:
    async with running_gateway(database_url, http_impl, REDIS_URL=redis_url) as (api, ctx):
        grant = await sign_in(api, ctx)
        user_id = ctx.tokens.verify_refresh(grant["refresh"]).user_id
        redis_server.stop()  # the logout's mirror write fails: nothing but PostgreSQL refuses
        try:
            async with rotation_held(ctx.pool, user_id):
                rotating = asyncio.ensure_future(
                    api.post(REFRESH, json={"refresh": grant["refresh"]})
                )
                await wait_for_lock_waiters(ctx.pool, 1)
                logging_out = asyncio.ensure_future(
                    api.post(
                        "/api/v1/auth/logout",
                        json={"refresh": grant["refresh"]},
                        token=grant["access"],
                    )
                )
                await wait_for_lock_waiters(ctx.pool, 2)
            rotated, logout = await rotating, await logging_out
            assert (rotated.status, logout.status) == (200, 204)

            successor = rotated.json()["refresh"]
            live = await ctx.pool.fetchval(
                "SELECT count(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL",
                ctx.tokens.verify_refresh(successor).family_id,
            )
            assert live == 0
            assert (await api.post(REFRESH, json={"refresh": successor})).status == 401
        finally:
            redis_server.start()
