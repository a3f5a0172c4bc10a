"""The account service on a real database: rules, rotation under concurrency, revocation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from server.context import AppContext
from server.domain.errors import (
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    ValidationFailed,
)
from server.domain.principal import Principal
from server.services import accounts
from server.services.accounts import TokenPair
from server.services.revocations import family_key, is_known_revoked
from tests.conftest import make_settings
from workers.broker import build_context_with_jobs

PASSWORD = "correct horse battery"


def new_email() -> str:
    return f"svc-{uuid.uuid4().hex[:12]}@example.com"


async def live_tokens(ctx: AppContext, family_id: uuid.UUID) -> int:
    count: int = await ctx.pool.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE family_id = $1 AND revoked_at IS NULL", family_id
    )
    return count


@pytest_asyncio.fixture
async def redis_ctx(database_url: str, redis_url: str) -> AsyncIterator[AppContext]:
    context = await build_context_with_jobs(make_settings(database_url, REDIS_URL=redis_url))
    yield context
    await context.close()


async def test_register_stores_a_lowercased_customer(ctx: AppContext) -> None:
    email = new_email()
    user, tokens = await accounts.register(ctx, f" {email.upper()} ", PASSWORD, " Ada ")
    assert (user.email, user.name, user.role) == (email, "Ada", "customer")
    assert user.password_hash.startswith("$argon2id$")
    assert ctx.tokens.verify_access(tokens.access) == Principal(user.id, "customer")


@pytest.mark.parametrize(
    "email,password,field",
    [
        ("not-an-email", PASSWORD, "email"),
        ("x@example.com", "short", "password"),
        ("x@example.com", "p" * 1025, "password"),
        ("a" * 250 + "@example.com", PASSWORD, "email"),
    ],
)
async def test_register_enforces_its_rules_whatever_the_edge(
    ctx: AppContext, email: str, password: str, field: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        await accounts.register(ctx, email, password)
    assert [e.field for e in raised.value.errors] == [field]


async def test_register_twice_is_already_exists(ctx: AppContext) -> None:
    email = new_email()
    await accounts.register(ctx, email, PASSWORD)
    with pytest.raises(AlreadyExists):
        await accounts.register(ctx, email.upper(), PASSWORD)


async def test_login_refuses_bad_credentials_alike(ctx: AppContext) -> None:
    email = new_email()
    await accounts.register(ctx, email, PASSWORD)
    with pytest.raises(Unauthenticated) as wrong:
        await accounts.login(ctx, email, "wrong password!")
    with pytest.raises(Unauthenticated) as unknown:
        await accounts.login(ctx, new_email(), PASSWORD)
    assert wrong.value.detail == unknown.value.detail == accounts.BAD_CREDENTIALS


async def test_of_many_concurrent_refreshes_exactly_one_wins(ctx: AppContext) -> None:
    _, tokens = await accounts.register(ctx, new_email(), PASSWORD)
    family = ctx.tokens.verify_refresh(tokens.refresh).family_id

    results = await asyncio.gather(
        *(accounts.refresh(ctx, tokens.refresh) for _ in range(10)), return_exceptions=True
    )

    winners = [r for r in results if isinstance(r, TokenPair)]
    losers = [r for r in results if isinstance(r, Unauthenticated)]
    assert len(winners) == 1 and len(losers) == 9
    assert await live_tokens(ctx, family) == 0  # the losers revoked the winner's successor too
    with pytest.raises(Unauthenticated):
        await accounts.refresh(ctx, winners[0].refresh)


async def test_rotation_keeps_one_live_token_per_family(ctx: AppContext) -> None:
    _, tokens = await accounts.register(ctx, new_email(), PASSWORD)
    family = ctx.tokens.verify_refresh(tokens.refresh).family_id
    for _ in range(3):
        tokens = await accounts.refresh(ctx, tokens.refresh)
    rows = await ctx.pool.fetch(
        "SELECT used_at IS NOT NULL AS used FROM refresh_tokens WHERE family_id = $1", family
    )
    assert sorted(r["used"] for r in rows) == [False, True, True, True]


async def test_logout_revokes_only_its_own_family(ctx: AppContext) -> None:
    email = new_email()
    user, first = await accounts.register(ctx, email, PASSWORD)
    second = await accounts.login(ctx, email, PASSWORD)
    caller = Principal(user.id, "customer")

    await accounts.logout(ctx, caller, first.refresh)

    with pytest.raises(Unauthenticated):
        await accounts.refresh(ctx, first.refresh)
    assert isinstance(await accounts.refresh(ctx, second.refresh), TokenPair)


async def test_logout_with_another_users_token_is_refused(ctx: AppContext) -> None:
    _, victim = await accounts.register(ctx, new_email(), PASSWORD)
    attacker, _ = await accounts.register(ctx, new_email(), PASSWORD)
    with pytest.raises(PermissionDenied):
        await accounts.logout(ctx, Principal(attacker.id, "customer"), victim.refresh)


async def test_a_deleted_account_cannot_refresh_or_see_itself(ctx: AppContext) -> None:
    user, tokens = await accounts.register(ctx, new_email(), PASSWORD)
    await ctx.pool.execute("DELETE FROM users WHERE id = $1", user.id)
    with pytest.raises(Unauthenticated):
        await accounts.refresh(ctx, tokens.refresh)
    with pytest.raises(Unauthenticated):
        await accounts.current_user(ctx, Principal(user.id, "customer"))


async def test_revocations_are_mirrored_into_redis(redis_ctx: AppContext) -> None:
    _, tokens = await accounts.register(redis_ctx, new_email(), PASSWORD)
    family = redis_ctx.tokens.verify_refresh(tokens.refresh).family_id
    assert not await is_known_revoked(redis_ctx.redis, family)

    await accounts.revoke_family(redis_ctx, family)

    assert await is_known_revoked(redis_ctx.redis, family)
    assert redis_ctx.redis is not None
    ttl = await redis_ctx.redis.ttl(family_key(family))
    assert redis_ctx.settings.refresh_token_ttl - 60 < ttl <= redis_ctx.settings.refresh_token_ttl
