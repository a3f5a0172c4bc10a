"""The `storefront` command against a real database: createadmin and seed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest
from redis.asyncio import Redis

from server.context import AppContext
from server.domain.errors import Unauthenticated
from server.services import accounts
from server.services.revocations import family_key
from tests.conftest import BASE_ENV


async def _storefront(database_url: str, *args: str, **extra_env: str) -> tuple[int, str]:
    env = {**os.environ, **BASE_ENV, "DATABASE_URL": database_url, **extra_env}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_createadmin_creates_then_promotes(database_url: str) -> None:
    code, output = await _storefront(
        database_url, "createadmin", "--email", "Boss@Example.com", "--password", "a-long-password"
    )
    assert code == 0 and "created admin boss@example.com" in output
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE users SET role = 'customer' WHERE email = 'boss@example.com'")
        code, output = await _storefront(
            database_url,
            "createadmin",
            "--email",
            "boss@example.com",
            "--password",
            "another-long-password",
        )
        assert code == 0 and "promoted admin" in output
        rows = await conn.fetch("SELECT role FROM users WHERE email = 'boss@example.com'")
        assert [r["role"] for r in rows] == ["admin"]
    finally:
        await conn.close()


async def test_createadmin_on_an_existing_account_ends_its_sign_ins(
    database_url: str, redis_url: str, ctx: AppContext
) -> None:
    email = "reset@example.com"
    _, first_login = await accounts.register(ctx, email, "the old password")
    rotated = await accounts.refresh(ctx, first_login.refresh)
    other_device = await accounts.login(ctx, email, "the old password")

    code, output = await _storefront(
        database_url,
        "createadmin",
        "--email",
        email,
        "--password",
        "the new password",
        REDIS_URL=redis_url,
    )

    assert code == 0 and "promoted admin" in output, output
    # Sessions from before the reset must not go on refreshing, now with admin tokens.
    for old in (rotated.refresh, other_device.refresh):
        with pytest.raises(Unauthenticated):
            await accounts.refresh(ctx, old)  # ctx has no Redis: PostgreSQL refuses
    families = [ctx.tokens.verify_refresh(t.refresh).family_id for t in (rotated, other_device)]
    redis = Redis.from_url(redis_url)
    try:  # mirrored, as a logout is, so that every gateway refuses them at once
        assert await redis.exists(*(family_key(f) for f in families)) == 2
    finally:
        await redis.aclose()
    fresh = await accounts.login(ctx, email, "the new password")
    assert ctx.tokens.verify_access(fresh.access).role == "admin"


async def test_createadmin_refuses_a_short_password(database_url: str) -> None:
    code, output = await _storefront(
        database_url, "createadmin", "--email", "a@b.co", "--password", "short"
    )
    assert code == 2 and "at least 10" in output


async def test_seed_fills_the_catalog_once(database_url: str) -> None:
    code, output = await _storefront(database_url, "seed", "--products", "120", "--categories", "4")
    assert code == 0 and "seeded 4 categories and 120 products" in output
    code, output = await _storefront(database_url, "seed", "--products", "120", "--categories", "4")
    assert code == 0 and "seeded 0 categories and 0 products" in output
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM products WHERE sku LIKE 'SEED-%'") == 120
        assert await conn.fetchval("SELECT min(stock) FROM product_variants") >= 0
    finally:
        await conn.close()


async def test_a_configuration_error_is_a_clear_message_not_a_traceback(database_url: str) -> None:
    env = {
        **os.environ,
        **BASE_ENV,
        "DATABASE_URL": database_url,
        "STOREFRONT_ENV": "production",
        "JWT_SECRET": "short",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "migrate",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 2
    assert b"refusing to start in production" in output and b"Traceback" not in output
