"""Hostile connections against a real `storefront serve` process: 10 000 idle sockets and a
slowloris crowd trickling header bytes.

While they are held, ordinary requests on fresh connections are all served, in well under a
second; the process grows by a bounded amount per idle socket; the slowloris connections are
closed once the header deadline (10 s) passes, however steadily they trickle, and so are the
silent ones.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import statistics
import time
from pathlib import Path

import pytest

from server.context import AppContext
from tests.conftest import BASE_ENV, ApiClient
from tests.integration.test_serve import Server, _start
from tests.orders_support import create_product

pytestmark = pytest.mark.chaos

IDLE = 10_000
SLOWLORIS = 200
HEADER_TIMEOUT = 10.0  # server.http.fast's default header_timeout
# Kernel socket buffers are not in the RSS; the process's own share per idle connection (an
# asyncio transport, the protocol and its parser) is a few KB.
MAX_BYTES_PER_IDLE_CONNECTION = 12_000  # ~5 KB measured


def raise_open_file_limit() -> int:
    """The soft limit on open files raised to the hard one (the gateway child inherits it);
    how many idle sockets this process can then hold beside everything else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return min(IDLE, hard - 1_000)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def open_idle(port: int, count: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    sockets: list[socket.socket] = []

    async def one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        sockets.append(sock)

    for start in range(0, count, 100):  # the listen backlog is 128
        await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return sockets


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False  # still open, nothing to read
    except ConnectionError:
        return True


async def latencies(api: ApiClient, paths: list[str]) -> list[float]:
    taken = []
    for path in paths:
        began = time.perf_counter()
        response = await api.get(path, timeout=10)
        assert response.status == 200, response
        taken.append(time.perf_counter() - began)
    return taken


async def slowloris(port: int, stop: asyncio.Event) -> float | None:
    """Trickle a never-ending header; the seconds until the server hung up (None: it did not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    writer.write(b"GET /api/v1/products HTTP/1.1\r\nHost: shop\r\n")
    try:
        while not stop.is_set():
            writer.write(b"X-Trickle: a\r\n")
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), 0.5) == b"":
                    return time.monotonic() - began
            except TimeoutError:
                continue
            return time.monotonic() - began  # an answer (408) then the close
    except (ConnectionError, OSError):
        return time.monotonic() - began
    finally:
        writer.close()
    return None


async def test_idle_crowds_and_slowloris_do_not_hurt_served_requests(
    database_url: str, ctx: AppContext
) -> None:
    idle_count = raise_open_file_limit()
    assert idle_count >= 1_000, "the open-file limit (ulimit -Hn) is too low for this test"
    products = [await create_product(ctx.pool, stock=10) for _ in range(5)]
    paths = [f"/api/v1/products/{products[n % 5]}" for n in range(200)]
    server: Server = await _start({**os.environ, **BASE_ENV, "DATABASE_URL": database_url})
    api = ApiClient(f"http://127.0.0.1:{server.http_port}")
    idle: list[socket.socket] = []
    stop = asyncio.Event()
    try:
        await latencies(api, paths)  # warm: caches, pools, code paths
        before = await latencies(api, paths)
        rss_before = rss_bytes(server.process.pid)

        idle = await open_idle(server.http_port, idle_count)
        lorises = [asyncio.create_task(slowloris(server.http_port, stop)) for _ in range(SLOWLORIS)]
        await asyncio.sleep(1.0)
        fresh = ApiClient(f"http://127.0.0.1:{server.http_port}")
        during = await latencies(fresh, paths)
        fresh.close()
        grown = rss_bytes(server.process.pid) - rss_before

        hung_up = await asyncio.wait_for(asyncio.gather(*lorises), HEADER_TIMEOUT + 10)
        after = await latencies(api, paths)
        silent_closed = sum(_closed_by_peer(sock) for sock in idle[:: idle_count // 100][:100])
    finally:
        stop.set()
        for sock in idle:
            sock.close()
        api.close()
        server.process.terminate()
        await server.process.wait()

    assert len(idle) == idle_count
    # Served requests: every one answered (latencies() asserts 200), none starved.
    assert max(during) < 1.0 and max(after) < 1.0, (max(during), max(after))
    assert statistics.median(during) < statistics.median(before) + 0.05
    assert grown < idle_count * MAX_BYTES_PER_IDLE_CONNECTION, grown
    # A connection that never sends a byte is held to the same header deadline.
    assert silent_closed == 100, silent_closed
    # Every slowloris connection was cut, after the header deadline and not much later.
    assert all(t is not None for t in hung_up)
    assert min(hung_up) >= HEADER_TIMEOUT - 1.0  # type: ignore[type-var]
    assert max(hung_up) <= HEADER_TIMEOUT + 5.0  # type: ignore[type-var]
