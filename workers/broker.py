"""The one taskiq broker definition, its jobs and their schedules.

- `REDIS_URL` set: a Redis stream broker (acknowledged deliveries; a message a dead worker
  held is delivered again after `REDELIVER_AFTER_MS`). Gateways enqueue; `storefront worker`
  runs the tasks and `storefront scheduler` enqueues the periodic ones.
- no `REDIS_URL`: taskiq's in-memory broker; the gateway runs the tasks and the scheduler
  itself (workers.inprocess).

A broker is built per AppContext (no module-level broker): the gateway's broker runs tasks with
the gateway's context; a worker's broker opens a context of its own on WORKER_STARTUP and
closes it on WORKER_SHUTDOWN. Every job is idempotent and safe to run twice at once, so a
duplicate delivery or two schedulers cost only time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from taskiq import AsyncBroker, Context, InMemoryBroker, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq.schedule_sources import LabelScheduleSource
from taskiq.scheduler.scheduler import TaskiqScheduler

from server.config import Settings
from server.context import AppContext, build_context
from server.db.maintenance import purge_expired
from workers.middleware import TaskObservability
from workers.tasks.analytics import refresh_product_analytics
from workers.tasks.orders import cancel_unpaid_orders
from workers.tasks.outbox import DeliveryReport, deliver_due, mailer_for
from workers.tasks.payments import settle_unanswered_refunds
from workers.tasks.webhooks import WebhookReport
from workers.tasks.webhooks import deliver_due as deliver_webhooks_due

log = logging.getLogger(__name__)

QUEUE = "storefront:tasks"
CONSUMER_GROUP = "storefront-workers"
REDELIVER_AFTER_MS = 10 * 60 * 1000
ENQUEUE_TIMEOUT = 1.0

CLEANUP = "storefront.cleanup"
ANALYTICS = "storefront.analytics"
EXPIRE_ORDERS = "storefront.orders.expire_unpaid"
DELIVER_OUTBOX = "storefront.outbox.deliver"
DELIVER_WEBHOOKS = "storefront.webhooks.deliver"
SETTLE_REFUNDS = "storefront.payments.settle_refunds"


async def run_cleanup(ctx: AppContext) -> dict[str, int]:
    return await purge_expired(ctx.pool)


async def run_outbox_delivery(ctx: AppContext) -> dict[str, int]:
    report: DeliveryReport = await deliver_due(ctx.pool, mailer_for(ctx.settings))
    return {"sent": report.sent, "retrying": report.retrying, "dead": report.dead}


async def run_webhook_delivery(ctx: AppContext) -> dict[str, int]:
    report: WebhookReport = await deliver_webhooks_due(ctx.pool, ctx.settings)
    return {"succeeded": report.succeeded, "retrying": report.retrying, "dead": report.dead}


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    run: Callable[[AppContext], Awaitable[Any]]
    cron: str  # UTC; minutes are staggered so the jobs do not start together


JOBS: tuple[Job, ...] = (
    Job(CLEANUP, run_cleanup, "17 3 * * *"),  # daily
    Job(ANALYTICS, refresh_product_analytics, "7 */6 * * *"),  # every 6 h
    Job(EXPIRE_ORDERS, cancel_unpaid_orders, "*/30 * * * *"),  # every 30 min
    Job(DELIVER_OUTBOX, run_outbox_delivery, "*/15 * * * *"),  # every 15 min (+ on the event)
    Job(DELIVER_WEBHOOKS, run_webhook_delivery, "* * * * *"),  # every minute (+ on the event)
    Job(SETTLE_REFUNDS, settle_unanswered_refunds, "3-59/5 * * * *"),  # every 5 min
)


def _task_of(job: Job) -> Callable[..., Awaitable[Any]]:
    async def task(context: Annotated[Context, TaskiqDepends()]) -> Any:
        ctx = context.state.ctx
        if ctx is None:
            raise RuntimeError("the broker has no AppContext (WORKER_STARTUP did not run)")
        return await job.run(ctx)

    task.__name__ = task.__qualname__ = job.name.rpartition(".")[2]
    return task


def build_broker(settings: Settings, ctx: AppContext | None = None) -> AsyncBroker:
    """The broker for these settings; `ctx` is the context tasks run with (None: a worker
    process, which opens its own on startup)."""
    broker: AsyncBroker
    if settings.redis_url:
        from taskiq_redis import RedisStreamBroker

        broker = RedisStreamBroker(
            url=settings.redis_url,
            queue_name=QUEUE,
            consumer_group_name=CONSUMER_GROUP,
            maxlen=100_000,
            idle_timeout=REDELIVER_AFTER_MS,
            unacknowledged_lock_timeout=30,
            socket_connect_timeout=2.0,
            socket_timeout=10.0,
        )
    else:
        broker = InMemoryBroker(max_stored_results=20)
    broker.add_middlewares(TaskObservability())
    for job in JOBS:
        broker.register_task(
            _task_of(job),
            task_name=job.name,
            schedule=[{"cron": job.cron, "schedule_id": job.name}],
        )
    broker.state.ctx = ctx
    broker.state.owns_ctx = False
    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, _context_opener(settings, broker))
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, _close_context)
    return broker


def _context_opener(
    settings: Settings, broker: AsyncBroker
) -> Callable[[TaskiqState], Awaitable[None]]:
    async def open_context(state: TaskiqState) -> None:
        if state.ctx is not None:
            return  # the gateway's own context (in-memory broker)
        ctx = await build_context(settings)
        attach_jobs(ctx, broker)  # tasks that enqueue follow-ups use this worker's broker
        state.ctx = ctx
        state.owns_ctx = True

    return open_context


async def _close_context(state: TaskiqState) -> None:
    if not state.owns_ctx or state.ctx is None:
        return
    ctx: AppContext = state.ctx
    state.ctx = None
    state.owns_ctx = False
    await ctx.close()


def build_scheduler(broker: AsyncBroker) -> TaskiqScheduler:
    """Sends each job at its cron time (the schedules are the tasks' `schedule` labels)."""
    return TaskiqScheduler(broker, [LabelScheduleSource(broker)])


def is_in_memory(broker: AsyncBroker) -> bool:
    return isinstance(broker, InMemoryBroker)


async def drain(broker: AsyncBroker, seconds: float = 5.0) -> None:
    """Let the jobs an in-memory broker is running in this process finish (up to `seconds`)."""
    if not isinstance(broker, InMemoryBroker):
        return
    try:
        await asyncio.wait_for(broker.wait_all(), seconds)
    except TimeoutError:
        log.warning("in-process jobs still running after %.0fs; leaving them", seconds)


async def enqueue(ctx: AppContext, task_name: str) -> bool:
    """Enqueue a job now; False (logged) when the broker cannot take it. Never raises: every
    job also runs on its schedule, which picks up whatever an enqueue missed."""
    broker = ctx.broker
    task = broker.find_task(task_name) if broker is not None else None
    if task is None:
        return False
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT):
            await task.kiq()
    except Exception as exc:
        log.warning(
            "could not enqueue %s (%s: %s); its schedule will run it",
            task_name,
            type(exc).__name__,
            exc,
        )
        return False
    return True


async def enqueue_outbox_delivery(ctx: AppContext) -> bool:
    """Deliver the outbox now: call after the transaction that wrote outbox rows commits
    (order confirmations, low-stock alerts)."""
    return await enqueue(ctx, DELIVER_OUTBOX)


# How long a start of a delivery job covers later asks: a burst of checkouts in this process
# enqueues the outbox job twice (now, and once at the window's end), not once per order.
COALESCE_WINDOW = 0.05


class CoalescedStart:
    """Starts of one job, at most one per `window` seconds. An ask inside the window is served
    by a single further start at its end, which comes after the ask, so the job still sees
    every row committed before it was asked; nothing is delayed by more than `window`."""

    def __init__(self, start: Callable[[], Awaitable[bool]], window: float) -> None:
        self._start = start
        self._window = window
        self._covered_until = 0.0  # loop time up to which a start is already promised
        self._trailing: asyncio.Task[bool] | None = None  # the promised start, until it begins
        self._running: set[asyncio.Task[bool]] = set()  # held until done (the loop holds weakly)

    async def ask(self) -> bool:
        """Start the job now or at the window's end; False when a start now failed."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._covered_until:
            self._covered_until = now + self._window
            return await self._start()
        if self._trailing is None or self._trailing.get_loop() is not loop:  # (a closed loop's)
            task = loop.create_task(self._start_later(self._covered_until - now))
            self._trailing = task
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return True

    async def _start_later(self, delay: float) -> bool:
        await asyncio.sleep(delay)
        # An ask from here on is not covered: the job may read before that ask's commit.
        self._trailing = None
        self._covered_until = asyncio.get_running_loop().time() + self._window
        return await self._start()

    async def settle(self) -> None:
        """Make the promised start now and wait for starts under way (the process stops)."""
        trailing, self._trailing = self._trailing, None
        if trailing is not None:
            trailing.cancel()
            await self._start()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


class BrokerJobs:
    """server/jobs.py's JobQueue over this process's taskiq broker (`ctx.jobs`); the delivery
    jobs' starts are coalesced (CoalescedStart: every job is safe to run twice, and one run
    delivers every row that is due)."""

    def __init__(self, ctx: AppContext, window: float = COALESCE_WINDOW) -> None:
        self.outbox = CoalescedStart(lambda: enqueue_outbox_delivery(ctx), window)
        self.webhooks = CoalescedStart(lambda: enqueue(ctx, DELIVER_WEBHOOKS), window)

    async def deliver_outbox(self) -> bool:
        return await self.outbox.ask()

    async def deliver_webhooks(self) -> bool:
        return await self.webhooks.ask()

    async def settle(self) -> None:
        await self.outbox.settle()
        await self.webhooks.settle()


def attach_jobs(ctx: AppContext, broker: AsyncBroker | None = None) -> None:
    """Give `ctx` its background jobs: `broker` (by default one built for it, whose tasks run
    with it) and the job port services call (`ctx.jobs`). When the context closes, promised
    starts are made and in-process jobs are let finish."""
    broker = broker if broker is not None else build_broker(ctx.settings, ctx)
    ctx.broker = broker
    jobs = BrokerJobs(ctx)
    ctx.jobs = jobs
    ctx.on_close(jobs.settle)
    ctx.on_close(lambda: drain(broker))


async def build_context_with_jobs(
    settings: Settings, *, apply_migrations: bool | None = None
) -> AppContext:
    """The context of a gateway or CLI process: `build_context` with its jobs attached."""
    ctx = await build_context(settings, apply_migrations=apply_migrations)
    attach_jobs(ctx)
    return ctx
