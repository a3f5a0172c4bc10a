"""Outbound webhook delivery under hostile or slow receivers: one slow receiver cannot fail the
others' deliveries, a huge answer costs the worker no memory, and the SSRF guard refuses every
address that is not globally routable, also inside IPv6."""

from __future__ import annotations

import asyncio
import ipaddress
import tracemalloc
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import tornado.web

from server.context import AppContext, build_context
from server.db import webhooks as webhooks_db
from server.domain.errors import ValidationFailed
from server.services import webhooks
from server.services.webhook_targets import check_target, is_public
from tests.conftest import free_port, make_settings
from workers.tasks.webhooks import deliver_due

BIG_ANSWER = 40 << 20  # bytes


class Slow(tornado.web.RequestHandler):
    async def post(self) -> None:
        await asyncio.sleep(2.0)
        self.finish(b"ok")


class Healthy(tornado.web.RequestHandler):
    hits = 0

    def post(self) -> None:
        Healthy.hits += 1
        self.finish(b"ok")


class Huge(tornado.web.RequestHandler):
    async def post(self) -> None:
        chunk = b"x" * (1 << 20)
        for _ in range(BIG_ANSWER // len(chunk)):
            self.write(chunk)
            await self.flush()
        self.finish()


@pytest_asyncio.fixture(scope="module")
async def receivers() -> AsyncIterator[str]:
    port = free_port()
    app = tornado.web.Application([("/slow", Slow), ("/ok", Healthy), ("/huge", Huge)])
    server = app.listen(port, address="127.0.0.1")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest_asyncio.fixture(scope="module")
async def ctx(database_url: str) -> AsyncIterator[AppContext]:
    # No jobs attached: only the test delivers. A 1 s timeout, and one failure disables.
    settings = make_settings(database_url, WEBHOOK_TIMEOUT="1", WEBHOOK_MAX_FAILURES="1")
    context = await build_context(settings)
    yield context
    await context.close()


@pytest_asyncio.fixture(autouse=True)
async def no_subscriptions(ctx: AppContext) -> None:
    await ctx.pool.execute("DELETE FROM webhook_subscriptions")


async def subscribe(ctx: AppContext, url: str, event: str) -> webhooks.Subscription:
    return await webhooks.create(ctx, webhooks.SubscriptionCreate(url=url, events=[event]))


async def emit(ctx: AppContext, event_type: str, count: int) -> None:
    async with ctx.pool.acquire() as conn, conn.transaction():
        for n in range(count):
            await webhooks_db.emit(conn, event_type, {"n": n})


async def test_a_slow_receiver_does_not_fail_the_others(ctx: AppContext, receivers: str) -> None:
    slow = await subscribe(ctx, receivers + "/slow", "stock.low")
    healthy = await subscribe(ctx, receivers + "/ok", "product.updated")
    await emit(ctx, "stock.low", 20)  # claimed first: ahead of the healthy one in the batch
    await emit(ctx, "product.updated", 1)
    Healthy.hits = 0

    await deliver_due(ctx.pool, ctx.settings)

    assert Healthy.hits == 1
    state = await ctx.pool.fetchval(
        "SELECT status FROM webhook_deliveries WHERE subscription_id = $1", healthy.id
    )
    assert state == "succeeded"
    assert (await webhooks.get(ctx, healthy.id)).is_active
    assert not (await webhooks.get(ctx, slow.id)).is_active  # its own timeouts: its own failures


async def test_a_huge_answer_is_not_kept_in_memory(ctx: AppContext, receivers: str) -> None:
    subscription = await subscribe(ctx, receivers + "/huge", "stock.low")
    await emit(ctx, "stock.low", 1)
    tracemalloc.start()
    try:
        await deliver_due(ctx.pool, ctx.settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    state = await ctx.pool.fetchval(
        "SELECT status FROM webhook_deliveries WHERE subscription_id = $1", subscription.id
    )
    assert state == "succeeded"
    assert peak < BIG_ANSWER // 4, f"peak {peak >> 20} MiB for a {BIG_ANSWER >> 20} MiB answer"


@pytest.mark.parametrize(
    "address",
    [
        "100.100.100.200",  # shared address space (RFC 6598): a cloud's metadata service
        "100.64.0.1",
        "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 wrapping 169.254.169.254
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "169.254.169.254",
        "10.1.2.3",
        "fd00::1",
        "::1",
        "0.0.0.0",
        "224.0.0.1",
        "ff02::1",
    ],
)
async def test_addresses_that_are_not_globally_routable_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(ValidationFailed):
        await check_target(f"https://{host}/hook", allow_private=False, require_https=True)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))
