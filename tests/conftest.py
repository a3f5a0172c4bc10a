"""Test harness: real PostgreSQL and Redis, the real app on real sockets.

- PostgreSQL: `DATABASE_URL` when set (a server CI provides), else an embedded server started once
  per session. The schema is migrated once into a template database; every test module gets a
  fresh copy (`CREATE DATABASE ... TEMPLATE`), which takes milliseconds.
- Redis: a `redis-server` on a free port, started once per session.
- `gateway`: the REST and gRPC servers of one gateway process, on free ports, in the test loop;
  parametrized over both HTTP connection implementations.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import orjson
import pytest
import pytest_asyncio
import tornado.httpclient

from loadtests.harness import free_port
from server.config import Settings, load_settings
from server.context import AppContext
from server.db import migrations, users
from server.db.embedded import EmbeddedPostgres
from server.db.users import UserRecord
from server.runtime import Addresses, Gateway, HttpImpl, build_gateway
from server.services.passwords import hash_password
from workers.broker import build_context_with_jobs

TEMPLATE_DB = "storefront_test_template"
HTTP_IMPLS: list[str] = os.environ.get("STOREFRONT_TEST_HTTP_IMPLS", "fast,tornado").split(",")
_db_counter = itertools.count(1)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


# ---- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL of a real PostgreSQL server."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    data_dir = Path(tempfile.mkdtemp(prefix="storefront-pg-"))
    embedded = EmbeddedPostgres(data_dir)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest_asyncio.fixture(scope="session")
async def pg_template(pg_admin_url: str) -> str:
    """Name of a migrated template database that test databases are copied from."""
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    template = await asyncpg.connect(with_database(pg_admin_url, TEMPLATE_DB))
    try:
        await migrations.migrate(template)
    finally:
        await template.close()
    return TEMPLATE_DB


async def create_test_database(pg_admin_url: str, template: str) -> str:
    name = f"storefront_test_{os.getpid()}_{next(_db_counter)}"
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await conn.close()
    return with_database(pg_admin_url, name)


async def drop_test_database(pg_admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="module")
async def database_url(pg_admin_url: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test module."""
    url = await create_test_database(pg_admin_url, pg_template)
    yield url
    await drop_test_database(pg_admin_url, url)


# ---- Redis -----------------------------------------------------------------------------------


class RedisServer:
    """A real `redis-server` process on a free port; can be stopped and restarted by tests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(5)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients (the crash the fault tests simulate)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The shared test Redis, flushed before each test that asks for it."""
    if redis_server.process is None:
        redis_server.start()
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


# ---- settings, context, gateway --------------------------------------------------------------

BASE_ENV: dict[str, str] = {
    "STOREFRONT_ENV": "testing",
    "JWT_SECRET": "test-secret-0123456789-0123456789-abcdef",
    "RATE_LIMIT_ANON": "100000/hour",
    "RATE_LIMIT_USER": "100000/hour",
    "RATE_LIMIT_LOGIN": "100000/minute",
    "LOG_LEVEL": "WARNING",
}


def make_settings(database_url: str, **overrides: str) -> Settings:
    env: Mapping[str, str] = {**BASE_ENV, "DATABASE_URL": database_url, **overrides}
    return load_settings(env)


@pytest_asyncio.fixture(scope="module")
async def ctx(database_url: str) -> AsyncIterator[AppContext]:
    context = await build_context_with_jobs(make_settings(database_url))
    yield context
    await context.close()


@pytest.fixture(scope="module", params=HTTP_IMPLS)
def http_impl(request: pytest.FixtureRequest) -> str:
    impl: str = request.param
    return impl


async def start_gateway(ctx: AppContext, http_impl: str = "fast") -> tuple[Gateway, Addresses]:
    impl: HttpImpl = "fast" if http_impl == "fast" else "tornado"
    gateway = build_gateway(ctx, http_impl=impl)
    addresses = await gateway.start("127.0.0.1", 0, 0)
    return gateway, addresses


@asynccontextmanager
async def running_gateway(
    database_url: str, http_impl: str = "fast", **env: str
) -> AsyncIterator[tuple[ApiClient, AppContext]]:
    """A further gateway process of its own (context, pools, limiter) with settings overrides:
    two of them on one Redis behave as two replicas behind nginx."""
    context = await build_context_with_jobs(make_settings(database_url, **env))
    gw, addresses = await start_gateway(context, http_impl)
    api = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
    try:
        yield api, context
    finally:
        api.close()
        await gw.stop_servers(1.0)
        await context.close()


@pytest_asyncio.fixture(scope="module")
async def gateway(ctx: AppContext, http_impl: str) -> AsyncIterator[Addresses]:
    """One running gateway (REST + gRPC) on this module's database."""
    gw, addresses = await start_gateway(ctx, http_impl)
    yield addresses
    await gw.stop_servers(grace=1.0)


# ---- users ------------------------------------------------------------------------------------


class UserFactory:
    """Creates real users in the module's database and hands out their access tokens."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._n = itertools.count(1)

    async def create(
        self,
        role: str = "customer",
        *,
        email: str | None = None,
        password: str = "correct horse battery",
    ) -> tuple[UserRecord, str]:
        email = email or f"{role}{next(self._n)}-{os.urandom(4).hex()}@example.com"
        user = await users.create_user(
            self.ctx.pool, email, role.title(), await hash_password(password), role
        )
        return user, self.ctx.tokens.issue_access(user.id, user.role)


@pytest.fixture(scope="module")
def make_user(ctx: AppContext) -> UserFactory:
    return UserFactory(ctx)


# ---- clients ---------------------------------------------------------------------------------


class Response:
    def __init__(self, response: tornado.httpclient.HTTPResponse) -> None:
        self.status = response.code
        self.headers = response.headers
        self.body = response.body or b""

    def json(self) -> Any:
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


class ApiClient:
    """A small JSON client over Tornado's AsyncHTTPClient."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=512)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if json is not None:
            body = orjson.dumps(json)
            all_headers.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        url = path if path.startswith("http") else self.base_url + path
        response = await self.http.fetch(
            url,
            method=method,
            body=body,
            headers=all_headers,
            raise_error=False,
            request_timeout=timeout,
            allow_nonstandard_methods=True,
            follow_redirects=False,
        )
        if response.code == 599:
            raise response.error or RuntimeError("request failed")
        return Response(response)

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Response:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PATCH", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.http.close()


@pytest_asyncio.fixture(scope="module")
async def api(gateway: Addresses) -> AsyncIterator[ApiClient]:
    client = ApiClient(f"http://127.0.0.1:{gateway.http_port}")
    yield client
    client.close()


@pytest_asyncio.fixture(scope="module")
async def grpc_channel(gateway: Addresses) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    yield channel
    await channel.close()


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll an (async) predicate until it is truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
