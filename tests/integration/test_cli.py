"""The `storefront` command against a real database: createadmin and seed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from tests.conftest import BASE_ENV


async def _storefront(database_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, **BASE_ENV, "DATABASE_URL": database_url}
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
