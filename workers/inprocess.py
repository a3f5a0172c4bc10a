"""What a gateway process runs beside its servers.

- always: flushes the product views it counted to product_stats every VIEW_FLUSH_INTERVAL
  seconds and once more when it stops (views are counted in memory on the read path);
- always: starts its broker (with Redis that only declares the stream, so enqueues work);
- without Redis: runs the scheduler itself, and the in-memory broker runs the jobs in this
  process, on this loop, with this context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from taskiq.api import run_scheduler_task

from server.views import VIEW_FLUSH_INTERVAL, flush_views
from workers.broker import build_scheduler, drain, is_in_memory

if TYPE_CHECKING:
    from taskiq import AsyncBroker

    from server.context import AppContext

log = logging.getLogger(__name__)


class GatewayJobs:
    def __init__(self, ctx: AppContext, *, flush_interval: float = VIEW_FLUSH_INTERVAL) -> None:
        self.ctx = ctx
        self.flush_interval = flush_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    @property
    def runs_scheduler(self) -> bool:
        return self.ctx.broker is not None and is_in_memory(self.ctx.broker)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        broker = self.ctx.broker
        if broker is not None:
            try:
                await broker.startup()
            except Exception as exc:
                # Redis away at start: enqueues fail (and are logged) until it is back.
                log.warning("task broker did not start (%s: %s)", type(exc).__name__, exc)
            if is_in_memory(broker):
                self._tasks.append(asyncio.create_task(self._schedule(broker)))
        self._tasks.append(asyncio.create_task(self._flush_views_periodically()))

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop the scheduler, let running in-process jobs finish, write the last views."""
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        broker = self.ctx.broker
        if broker is not None:
            await drain(broker, drain_seconds)
        await self._flush_views()
        if broker is not None:
            try:
                await broker.shutdown()
            except Exception as exc:
                log.warning("task broker did not stop cleanly (%s: %s)", type(exc).__name__, exc)

    async def _schedule(self, broker: AsyncBroker) -> None:
        await run_scheduler_task(build_scheduler(broker))

    async def _flush_views_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self._flush_views()

    async def _flush_views(self) -> None:
        try:
            await flush_views(self.ctx.pool, self.ctx.views)
        except Exception as exc:
            # The counts were given back; the next flush writes them.
            log.warning("could not flush product views (%s: %s)", type(exc).__name__, exc)
