"""Migrations: ordered, recorded, idempotent, and safe from two processes at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from server.db import migrations
from tests.conftest import BASE_ENV, create_test_database, drop_test_database


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_two_concurrent_migrate_commands_leave_one_schema(pg_admin_url: str) -> None:
    url = await create_test_database(pg_admin_url, "template1")
    try:
        env = {**os.environ, **BASE_ENV, "DATABASE_URL": url}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server",
                "migrate",
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        results = [await p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        outputs = sorted(out.decode() for out, _ in results)
        # Exactly one process applied the migrations; the other found nothing to do.
        assert outputs[0].startswith("applied 0 migration(s)")
        assert outputs[1].startswith(f"applied {len(migrations.discover())} migration(s)")
        conn = await asyncpg.connect(url)
        try:
            recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
        assert recorded == len(migrations.discover())
        assert {
            "users",
            "products",
            "orders",
            "refresh_tokens",
            "idempotency_keys",
            "outbox",
        } <= await _tables(url)
    finally:
        await drop_test_database(pg_admin_url, url)


async def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrations.migrate(conn) == []
    finally:
        await conn.close()


async def test_schema_refuses_negative_stock_and_duplicate_skus(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO products (sku, name, price, currency, stock) "
            "VALUES ('S1', 'n', 1, 'USD', 1)"
        )
        try:
            await conn.execute("UPDATE products SET stock = stock - 2 WHERE sku = 'S1'")
            raise AssertionError("negative stock was accepted")
        except asyncpg.CheckViolationError:
            pass
        try:
            await conn.execute(
                "INSERT INTO products (sku, name, price, currency, stock) "
                "VALUES ('S1', 'n', 1, 'USD', 1)"
            )
            raise AssertionError("duplicate sku was accepted")
        except asyncpg.UniqueViolationError:
            pass
    finally:
        await conn.close()
