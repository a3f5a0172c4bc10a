"""`storefront serve` as a user runs it: one process, REST and gRPC, graceful on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
import tornado.web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.context import AppContext
from server.http.base import ApiHandler
from server.runtime import build_gateway
from tests.conftest import BASE_ENV, ApiClient, free_port


class Server:
    def __init__(self, process: asyncio.subprocess.Process, http_port: int, grpc_port: int) -> None:
        self.process = process
        self.http_port = http_port
        self.grpc_port = grpc_port


async def _start(env: dict[str, str]) -> Server:
    http_port, grpc_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = ApiClient(f"http://127.0.0.1:{http_port}")
    try:
        for _ in range(600):
            if process.returncode is not None:
                output = await process.stdout.read() if process.stdout else b""
                raise AssertionError(f"serve exited early: {output.decode()[-2000:]}")
            try:
                if (await client.get("/healthz", timeout=1)).status == 200:
                    return Server(process, http_port, grpc_port)
            except OSError:
                pass
            await asyncio.sleep(0.1)
    finally:
        client.close()
    process.kill()
    raise AssertionError("serve did not become healthy")


async def _grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(response.status)


@pytest_asyncio.fixture
async def served(database_url: str) -> AsyncIterator[Server]:
    env = {**os.environ, **BASE_ENV, "DATABASE_URL": database_url}
    server = await _start(env)
    yield server
    if server.process.returncode is None:
        server.process.kill()
        await server.process.wait()


async def test_serve_answers_rest_and_grpc_health_then_exits_cleanly_on_sigterm(
    served: Server,
) -> None:
    assert await _grpc_health(served.grpc_port) == health_pb2.HealthCheckResponse.SERVING
    served.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.process.wait(), 20) == 0


@pytest.mark.slow
async def test_serve_on_embedded_defaults_with_no_database_url() -> None:
    """What `make run` does on a new machine: no DATABASE_URL, no REDIS_URL."""
    with tempfile.TemporaryDirectory(prefix="storefront-data-") as data_dir:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(STOREFRONT_ENV="development", STOREFRONT_DATA_DIR=data_dir, LOG_LEVEL="WARNING")
        server = await _start(env)
        try:
            client = ApiClient(f"http://127.0.0.1:{server.http_port}")
            ready = await client.get("/readyz")
            client.close()
            assert ready.status == 200, ready
            assert await _grpc_health(server.grpc_port) == health_pb2.HealthCheckResponse.SERVING
        finally:
            server.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(server.process.wait(), 30) == 0


class SlowHandler(ApiHandler):
    access = {"GET": "anyone"}

    async def get(self) -> None:
        await asyncio.sleep(1.0)
        self.send_json({"slow": "done"})


async def test_shutdown_lets_an_in_flight_request_finish_and_refuses_new_ones(
    ctx: AppContext,
    http_impl: str,
) -> None:
    gateway = build_gateway(ctx, http_impl="fast" if http_impl == "fast" else "tornado")
    gateway.app.add_handlers(".*", [tornado.web.url(r"/slow", SlowHandler, {"ctx": ctx})])
    addresses = await gateway.start("127.0.0.1", 0, 0)
    client = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
    try:
        slow = asyncio.ensure_future(client.get("/slow"))
        await asyncio.sleep(0.3)  # the request is now being handled
        shutdown = asyncio.ensure_future(gateway.stop_servers(grace=10.0))
        await asyncio.sleep(0.1)
        with pytest.raises(OSError):
            fresh = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
            try:
                await fresh.get("/healthz", timeout=2)
            finally:
                fresh.close()
        response = await slow
        assert response.status == 200 and response.json() == {"slow": "done"}
        await asyncio.wait_for(shutdown, 10)
    finally:
        client.close()


async def test_serve_workers_runs_n_processes_on_one_port(database_url: str) -> None:
    """`--workers 2`: two gateway processes share the REST and gRPC ports (SO_REUSEPORT)."""
    import psutil

    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, **BASE_ENV, "DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--workers",
        "2",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = ApiClient(f"http://127.0.0.1:{http_port}")
    try:

        def listeners() -> set[int]:
            pids = set()
            for child in psutil.Process(process.pid).children():
                for conn in child.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == http_port:
                        pids.add(child.pid)
            return pids

        for _ in range(300):
            if len(listeners()) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(listeners()) == 2
        statuses = [(await client.get("/healthz")).status for _ in range(10)]
        assert statuses == [200] * 10
        assert await _grpc_health(grpc_port) == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        client.close()
        if process.returncode is None:
            for child in psutil.Process(process.pid).children():
                child.kill()
            process.kill()
            await process.wait()
