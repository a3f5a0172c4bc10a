"""`storefront worker` and `storefront scheduler`: taskiq's programmatic API on our broker.

Both need `REDIS_URL` (the broker they share with the gateways); without it the gateway runs
the jobs and the scheduler itself. SIGTERM/SIGINT stop them: the worker stops taking messages
and closes its AppContext; a task cut short is delivered again (stream acknowledgements) and
every job is safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from taskiq import AsyncBroker
from taskiq.api import run_receiver_task, run_scheduler_task

from server.config import Settings
from workers.broker import DELIVER_OUTBOX, EXPIRE_ORDERS, build_broker, build_scheduler

log = logging.getLogger("storefront.worker")

MAX_CONCURRENT_TASKS = 10
# Sent once when the scheduler starts, so a scheduler that was down does not leave mail and
# expired orders waiting for the next cron tick (both jobs are idempotent).
CATCH_UP_ON_START = (DELIVER_OUTBOX, EXPIRE_ORDERS)


def run(command: str, settings: Settings) -> int:
    if command not in ("worker", "scheduler"):
        print(f"storefront: unknown command {command!r}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print(
            f"storefront {command}: REDIS_URL is not set; without Redis the gateway runs the "
            "jobs and the scheduler in its own process",
            file=sys.stderr,
        )
        return 2
    try:
        import uvloop
    except ImportError:
        pass
    else:
        uvloop.install()
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        from server import metrics

        start_http_server(
            settings.worker_metrics_port, addr=settings.host, registry=metrics.REGISTRY
        )
    main = run_worker if command == "worker" else run_scheduler
    try:
        asyncio.run(main(settings))
    except Exception:
        log.exception("storefront %s failed", command)
        return 1
    return 0


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Receive and run tasks until signalled (or `stop` is set)."""
    broker = build_broker(settings)
    broker.is_worker_process = True
    await broker.startup()  # WORKER_STARTUP opens the AppContext; fails fast without a database
    log.info("worker started: consuming %s", settings.redis_url)
    receiver = asyncio.create_task(
        run_receiver_task(broker, max_async_tasks=MAX_CONCURRENT_TASKS, run_startup=False)
    )
    await _wait(stop, receiver)
    await _cancel(receiver)
    await broker.shutdown()
    log.info("worker stopped")


async def run_scheduler(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Enqueue each job at its cron time until signalled (or `stop` is set)."""
    broker: AsyncBroker = build_broker(settings)
    broker.is_scheduler_process = True
    scheduler = build_scheduler(broker)
    await scheduler.startup()
    for name in CATCH_UP_ON_START:
        task = broker.find_task(name)
        if task is not None:
            await task.kicker().with_labels(trigger="scheduler-start").kiq()
    log.info("scheduler started")
    loop_task = asyncio.create_task(run_scheduler_task(scheduler))
    await _wait(stop, loop_task)
    await _cancel(loop_task)
    await scheduler.shutdown()
    log.info("scheduler stopped")


async def _wait(stop: asyncio.Event | None, task: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(stop.wait() if stop is not None else _until_signalled())
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    await _cancel(waiter)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
