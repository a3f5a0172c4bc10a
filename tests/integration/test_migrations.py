"""Migrations: ordered, recorded, idempotent, and safe from two processes at once."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
        product_id = await conn.fetchval(
            "INSERT INTO products (sku, name, price, currency) VALUES ('S1', 'n', 1, 'USD') "
            "RETURNING id"
        )
        await conn.execute(
            "INSERT INTO product_variants (product_id, sku, stock) VALUES ($1, 'S1', 1)",
            product_id,
        )
        try:
            await conn.execute("UPDATE product_variants SET stock = stock - 2 WHERE sku = 'S1'")
            raise AssertionError("negative stock was accepted")
        except asyncpg.CheckViolationError:
            pass
        for table in (
            "products (sku, name, price, currency)",
            "product_variants (product_id, sku, stock)",
        ):
            values = (
                "('S1', 'n', 1, 'USD')"
                if table.startswith("products")
                else f"({product_id}, 'S1', 1)"
            )
            try:
                await conn.execute(f"INSERT INTO {table} VALUES {values}")
                raise AssertionError(f"duplicate sku was accepted in {table}")
            except asyncpg.UniqueViolationError:
                pass
    finally:
        await conn.close()


async def test_variants_migration_keeps_products_carts_and_orders(
    pg_admin_url: str, tmp_path: Path
) -> None:
    """Data written under the schema before variants survives 0003: each product becomes one
    variant with its sku and stock, cart and order lines point at it, and orders hold, commit
    or release their stock as their status says."""
    before = tmp_path / "before"
    before.mkdir()
    for migration in migrations.MIGRATIONS_DIR.glob("000[12]_*.sql"):
        shutil.copy(migration, before / migration.name)
    url = await create_test_database(pg_admin_url, "template1")
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrations.migrate(conn, before)
            user = await conn.fetchval(
                "INSERT INTO users (email, password_hash) VALUES ('a@b.c', 'x') RETURNING id"
            )
            shirt, mug = [
                await conn.fetchval(
                    "INSERT INTO products (sku, name, price, currency, stock) "
                    "VALUES ($1, $1, 500, 'USD', $2) RETURNING id",
                    sku,
                    stock,
                )
                for sku, stock in (("SHIRT", 7), ("MUG", 0))
            ]
            await conn.execute("INSERT INTO carts (user_id) VALUES ($1)", user)
            await conn.execute(
                "INSERT INTO cart_items (user_id, product_id, quantity) VALUES ($1, $2, 2)",
                user,
                shirt,
            )
            for status in ("pending", "paid", "cancelled"):
                order = await conn.fetchval(
                    """INSERT INTO orders (user_id, status, subtotal, discount, tax, total,
                                           currency)
                       VALUES ($1, $2, 500, 0, 0, 500, 'USD') RETURNING id""",
                    user,
                    status,
                )
                await conn.execute(
                    """INSERT INTO order_items (order_id, product_id, sku, name, quantity,
                                                unit_price, line_total)
                       VALUES ($1, $2, 'SHIRT', 'SHIRT', 1, 500, 500)""",
                    order,
                    shirt,
                )

            later = [m.version for m in migrations.discover() if m.version > "0002"]
            assert await migrations.migrate(conn) == later

            variants = await conn.fetch(
                "SELECT product_id, sku, options, price, stock, is_active FROM product_variants "
                "ORDER BY product_id"
            )
            assert [tuple(v) for v in variants] == [
                (shirt, "SHIRT", "{}", None, 7, True),
                (mug, "MUG", "{}", None, 0, True),
            ]
            shirt_variant = await conn.fetchval(
                "SELECT id FROM product_variants WHERE product_id = $1", shirt
            )
            assert (
                await conn.fetchval("SELECT variant_id FROM cart_items WHERE user_id = $1", user)
                == shirt_variant
            )
            states = await conn.fetch(
                """SELECT o.status, r.state, r.quantity, oi.variant_id
                     FROM orders o JOIN stock_reservations r ON r.order_id = o.id
                     JOIN order_items oi ON oi.order_id = o.id ORDER BY o.id"""
            )
            assert [tuple(s) for s in states] == [
                ("pending", "held", 1, shirt_variant),
                ("paid", "committed", 1, shirt_variant),
                ("cancelled", "released", 1, shirt_variant),
            ]
            columns = await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'"
            )
            assert "stock" not in {c["column_name"] for c in columns}
        finally:
            await conn.close()
    finally:
        await drop_test_database(pg_admin_url, url)
