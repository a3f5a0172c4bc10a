"""Worker, scheduler and gateway on one Redis: an order confirmation travels from the checkout
through the outbox and the Redis stream to a `storefront worker` process and out over SMTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest_asyncio

from tests.conftest import (
    BASE_ENV,
    ApiClient,
    UserFactory,
    free_port,
    make_settings,
    start_gateway,
)
from tests.orders_support import create_product
from tests.workers.smtp import Mailbox, smtp_server
from workers.broker import build_context_with_jobs

ROOT = Path(__file__).resolve().parents[2]


class Process:
    """A `storefront` subcommand in its own process, its JSON log lines in a file."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"storefront-{command}-", suffix=".log")[1])
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", command],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, Any]]:
        entries = []
        for raw in self.log.read_bytes().splitlines():
            try:
                entries.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue
        return entries

    async def wait_for_line(self, message: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not any(message in str(e.get("message")) for e in self.lines()):
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            await asyncio.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        self._out.close()
        return code


@contextmanager
def storefront(command: str, env: dict[str, str]) -> Iterator[Process]:
    process = Process(command, env)
    try:
        yield process
    finally:
        process.stop()
        process.log.unlink(missing_ok=True)


@pytest_asyncio.fixture
async def mailbox() -> AsyncIterator[tuple[Mailbox, str]]:
    with smtp_server() as server:
        yield server


async def until_mail_for(mailbox: Mailbox, outbox_id: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not mailbox.for_outbox_id(outbox_id):
        assert time.monotonic() < deadline, f"no mail for outbox row {outbox_id}"
        await asyncio.sleep(0.05)


async def test_an_order_confirmation_is_mailed_by_the_worker(
    database_url: str, redis_url: str, make_user: UserFactory, mailbox: tuple[Mailbox, str]
) -> None:
    inbox, smtp_url = mailbox
    env = {
        **os.environ,
        **BASE_ENV,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SMTP_URL": smtp_url,
        "MAIL_FROM": "orders@storefront.test",
        "LOG_LEVEL": "INFO",
    }
    ctx = await build_context_with_jobs(
        make_settings(database_url, REDIS_URL=redis_url, SMTP_URL=smtp_url)
    )
    gateway, addresses = await start_gateway(ctx, "tornado")
    api = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
    try:
        assert not gateway.jobs.runs_scheduler  # with Redis, the gateway only enqueues
        # Mail written while no scheduler or worker ran ...
        waiting: int = await ctx.pool.fetchval(
            """INSERT INTO outbox (kind, recipient, subject, body)
               VALUES ('low_stock', 'admin@example.com', 'Low stock: kettle', '1 left')
               RETURNING id"""
        )
        metrics_port = free_port()
        worker_env = {**env, "WORKER_METRICS_PORT": str(metrics_port)}
        with (
            storefront("worker", worker_env) as worker,
            storefront("scheduler", env) as scheduler,
        ):
            await worker.wait_for_line("worker started")
            await scheduler.wait_for_line("scheduler started")
            # ... goes out once the scheduler has enqueued a delivery (it catches up on start).
            await until_mail_for(inbox, waiting)

            user, token = await make_user.create()
            product = await create_product(ctx.pool, stock=20, price=1250, name="Copper kettle")
            added = await api.post(
                "/api/v1/cart/items", token=token, json={"product_id": product, "quantity": 2}
            )
            assert added.status == 200, added
            placed = await api.post(
                "/api/v1/orders",
                token=token,
                json={},
                headers={"X-Request-ID": "checkout-e2e-1", "Idempotency-Key": "e2e-1"},
            )
            assert placed.status == 201, placed
            order = placed.json()
            confirmation: int = await ctx.pool.fetchval(
                """SELECT id FROM outbox WHERE kind = 'order_confirmation'
                    AND dedupe_key LIKE $1 || '%'""",
                f"order_confirmation:{order['id']}",
            )

            await until_mail_for(inbox, confirmation)  # enqueued at once by the checkout

            [message] = inbox.for_outbox_id(confirmation)
            assert message["To"] == user.email and message["From"] == "orders@storefront.test"
            assert str(order["id"]) in message["Subject"] + message.get_content()
            await _until(
                lambda: ctx.pool.fetchval("SELECT status FROM outbox WHERE id = $1", confirmation),
                "sent",
            )
            # The worker's log lines for that delivery carry the checkout's request id.
            await _until(
                lambda: _async(
                    any(
                        e.get("request_id") == "checkout-e2e-1"
                        and e.get("task") == "storefront.outbox.deliver"
                        for e in worker.lines()
                    )
                ),
                True,
            )
            # The worker serves its own metrics: the deliveries it ran are counted there.
            scraped = await api.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert scraped.status == 200
            assert (
                b'taskiq_task_runs_total{outcome="success",task="storefront.outbox.deliver"}'
                in (scraped.body)
            )
            assert worker.stop() == 0 and scheduler.stop() == 0
        # Each mail went out exactly once.
        assert len(inbox.for_outbox_id(waiting)) == len(inbox.for_outbox_id(confirmation)) == 1
    finally:
        api.close()
        await gateway.stop_servers(grace=1.0)
        await ctx.close()


async def _async(value: Any) -> Any:
    return value


async def _until(read: Any, expected: Any, within: float = 10.0) -> None:
    """Poll the coroutine function `read` until it returns `expected`."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if value == expected:
            return
        assert time.monotonic() < deadline, f"still {value!r} after {within}s"
        await asyncio.sleep(0.05)
