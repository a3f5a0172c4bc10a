"""The broker, its schedules, and the jobs a gateway runs itself when there is no Redis."""

from __future__ import annotations

import asyncio

from taskiq import TaskiqMessage

from server import metrics
from server.context import AppContext
from server.observability import request_id_var
from tests.conftest import ApiClient, make_settings, start_gateway, wait_for
from tests.orders_support import create_product
from tests.workers.logs import json_lines
from workers.broker import (
    ANALYTICS,
    CLEANUP,
    COALESCE_WINDOW,
    DELIVER_OUTBOX,
    DELIVER_WEBHOOKS,
    EXPIRE_ORDERS,
    SETTLE_REFUNDS,
    CoalescedStart,
    build_broker,
    build_scheduler,
    enqueue_outbox_delivery,
    is_in_memory,
)
from workers.inprocess import GatewayJobs
from workers.middleware import TaskObservability


async def add_mail(ctx: AppContext, subject: str) -> int:
    outbox_id: int = await ctx.pool.fetchval(
        """INSERT INTO outbox (kind, recipient, subject, body)
           VALUES ('order_confirmation', 'ada@example.com', $1, 'thanks') RETURNING id""",
        subject,
    )
    return outbox_id


async def status_of(ctx: AppContext, outbox_id: int) -> str:
    status: str = await ctx.pool.fetchval("SELECT status FROM outbox WHERE id = $1", outbox_id)
    return status


async def test_every_job_is_scheduled_at_its_interval(ctx: AppContext) -> None:
    assert ctx.broker is not None
    source = build_scheduler(ctx.broker).sources[0]
    await source.startup()
    schedules = {s.task_name: s.cron for s in await source.get_schedules()}
    assert schedules == {
        CLEANUP: "17 3 * * *",  # daily
        ANALYTICS: "7 */6 * * *",  # every 6 hours
        EXPIRE_ORDERS: "*/30 * * * *",  # every 30 minutes
        DELIVER_OUTBOX: "*/15 * * * *",  # every 15 minutes
        DELIVER_WEBHOOKS: "* * * * *",  # every minute, and at once on an event
        SETTLE_REFUNDS: "3-59/5 * * * *",  # every 5 minutes
    }


async def test_without_redis_the_outbox_is_delivered_in_process_on_the_event(
    ctx: AppContext,
) -> None:
    assert ctx.broker is not None and is_in_memory(ctx.broker)
    outbox_id = await add_mail(ctx, "Order 1")
    runs_before = metrics.sample(
        "taskiq_task_runs_total", {"task": DELIVER_OUTBOX, "outcome": "success"}
    )
    token = request_id_var.set("req-0123")
    try:
        with json_lines("storefront.mail") as lines:
            assert await enqueue_outbox_delivery(ctx)
            await wait_for(lambda: _is_sent(ctx, outbox_id))
    finally:
        request_id_var.reset(token)
    [line] = [line for line in lines if line["outbox_id"] == outbox_id]
    # The task's log line carries the id of the request that enqueued it.
    assert line["request_id"] == "req-0123" and line["task"] == DELIVER_OUTBOX
    assert (
        metrics.sample("taskiq_task_runs_total", {"task": DELIVER_OUTBOX, "outcome": "success"})
        == runs_before + 1
    )
    assert metrics.sample("taskiq_task_duration_seconds_count", {"task": DELIVER_OUTBOX}) >= 1


async def _is_sent(ctx: AppContext, outbox_id: int) -> bool:
    return await status_of(ctx, outbox_id) == "sent"


def test_the_request_id_travels_as_a_task_label() -> None:
    middleware = TaskObservability()
    message = TaskiqMessage(task_id="t1", task_name=DELIVER_OUTBOX, labels={}, args=[], kwargs={})
    token = request_id_var.set("req-label")
    try:
        sent = middleware.pre_send(message)
    finally:
        request_id_var.reset(token)
    assert sent.labels["request_id"] == "req-label"
    # On the worker: the label becomes the logging context of the task run.
    request_id_var.set(None)
    middleware.pre_execute(sent)
    assert request_id_var.get() == "req-label"
    request_id_var.set(None)


async def test_a_failing_task_is_counted(ctx: AppContext) -> None:
    # A worker broker whose context was never opened: the task fails.
    broker = build_broker(ctx.settings)
    task = broker.find_task(CLEANUP)
    assert task is not None
    failures = metrics.sample("taskiq_task_runs_total", {"task": CLEANUP, "outcome": "failure"})
    result = await (await task.kiq()).wait_result(timeout=5)
    assert result.is_err
    assert (
        metrics.sample("taskiq_task_runs_total", {"task": CLEANUP, "outcome": "failure"})
        == failures + 1
    )


async def test_a_gateway_without_redis_runs_the_scheduler_and_flushes_views_on_stop(
    ctx: AppContext,
) -> None:
    product = await create_product(ctx.pool, stock=3)
    gateway, addresses = await start_gateway(ctx, "tornado")
    api = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
    try:
        assert gateway.jobs.runs_scheduler
        for _ in range(3):
            assert (await api.get(f"/api/v1/products/{product}")).status == 200
    finally:
        api.close()
        await gateway.stop_servers(grace=1.0)
    views = await ctx.pool.fetchval(
        "SELECT views FROM product_stats WHERE product_id = $1", product
    )
    assert views == 3


async def test_views_are_flushed_periodically(ctx: AppContext) -> None:
    product = await create_product(ctx.pool, stock=3)
    jobs = GatewayJobs(ctx, flush_interval=0.05)
    await jobs.start()
    try:
        ctx.record_product_view(product)
        ctx.record_product_view(product)
        await wait_for(lambda: _views(ctx, product, 2))
    finally:
        await jobs.stop()


async def _views(ctx: AppContext, product_id: int, expected: int) -> bool:
    views = await ctx.pool.fetchval(
        "SELECT views FROM product_stats WHERE product_id = $1", product_id
    )
    return bool(views == expected)


async def test_with_redis_the_gateway_leaves_scheduling_to_the_scheduler(
    database_url: str, redis_url: str
) -> None:
    from workers.broker import build_context_with_jobs

    context = await build_context_with_jobs(make_settings(database_url, REDIS_URL=redis_url))
    try:
        assert context.broker is not None and not is_in_memory(context.broker)
        jobs = GatewayJobs(context)
        assert not jobs.runs_scheduler
        await jobs.start()
        await jobs.stop()
    finally:
        await context.close()


async def test_a_bare_context_has_no_jobs_and_attach_jobs_drains_them_on_close(
    database_url: str,
) -> None:
    from server.context import build_context
    from workers.broker import attach_jobs

    context = await build_context(make_settings(database_url))
    assert context.broker is None and context.jobs is None  # server/ plugs no workers in
    attach_jobs(context)
    broker = context.broker
    assert broker is not None and is_in_memory(broker) and context.jobs is not None
    finished: list[str] = []

    @broker.task(task_name="test.slow_job")
    async def slow_job() -> None:
        await asyncio.sleep(0.2)
        finished.append("done")

    await broker.startup()
    await slow_job.kiq()
    await context.close()  # lets the in-process job finish while the pool is still open
    assert finished == ["done"]
    await broker.shutdown()


class StartLog:
    """A job start that records when it was made (loop time)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    async def __call__(self) -> bool:
        self.times.append(asyncio.get_running_loop().time())
        return True


async def test_a_burst_of_asks_is_one_start_now_and_one_after_the_last_ask() -> None:
    starts = StartLog()
    coalesced = CoalescedStart(starts, window=0.2)
    loop = asyncio.get_running_loop()
    asked = []
    for _ in range(10):
        assert await coalesced.ask()
        asked.append(loop.time())
        await asyncio.sleep(0.01)
    assert len(starts.times) == 1  # the first ask started it; the others were promised one
    await asyncio.sleep(0.25)
    assert len(starts.times) == 2
    assert starts.times[1] >= asked[-1]  # the job reads after the last ask's commit
    await asyncio.sleep(0.25)
    assert len(starts.times) == 2  # nothing more was asked
    assert await coalesced.ask()
    assert len(starts.times) == 3  # the window is over: an ask starts it at once


async def test_an_ask_during_a_start_gets_a_start_of_its_own() -> None:
    release = asyncio.Event()
    starts: list[float] = []

    async def slow_start() -> bool:
        starts.append(asyncio.get_running_loop().time())
        await release.wait()
        return True

    coalesced = CoalescedStart(slow_start, window=0.05)
    first = asyncio.create_task(coalesced.ask())
    await asyncio.sleep(0.01)
    assert await coalesced.ask()  # while the first start is still being made
    release.set()
    await first
    await asyncio.sleep(0.1)
    assert len(starts) == 2


async def test_settle_makes_the_promised_start_at_once() -> None:
    starts = StartLog()
    coalesced = CoalescedStart(starts, window=60)
    await coalesced.ask()
    await coalesced.ask()
    assert len(starts.times) == 1
    await coalesced.settle()
    assert len(starts.times) == 2
    await coalesced.settle()
    assert len(starts.times) == 2  # nothing was promised any more


async def test_every_confirmation_of_a_burst_of_checkouts_is_sent(ctx: AppContext) -> None:
    """Coalesced starts lose no mail: 12 orders at once, each confirmation sent."""
    from server.domain.principal import Principal
    from server.services import orders
    from tests.conftest import UserFactory

    assert ctx.jobs is not None and COALESCE_WINDOW < 1
    product = await create_product(ctx.pool, stock=100)
    users = [await UserFactory(ctx).create("customer") for _ in range(12)]
    order_input = orders.parse_order_input({"items": [{"product_id": product, "quantity": 1}]})
    placements = await asyncio.gather(
        *(orders.create_order(ctx, Principal(u.id, "customer"), order_input) for u, _ in users)
    )
    ids = [p.order.id for p in placements if p.order is not None]
    assert len(ids) == 12

    async def all_sent() -> bool:
        sent = await ctx.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE status = 'sent' AND dedupe_key = ANY($1::text[])",
            [f"order_confirmation:{i}" for i in ids],
        )
        return bool(sent == 12)

    await wait_for(all_sent, timeout=10)
