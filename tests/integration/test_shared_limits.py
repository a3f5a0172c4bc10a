"""Two gateway processes on one Redis share one budget; with Redis gone, limits hold locally and
logins fail closed with 503."""

from __future__ import annotations

import itertools
import time

import grpc

from server.rpc.pb.storefront.v1 import products_pb2, products_pb2_grpc
from tests.conftest import (
    RedisServer,
    Response,
    UserFactory,
    make_settings,
    running_gateway,
    start_gateway,
    wait_for,
)
from workers.broker import build_context_with_jobs

ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"
PASSWORD = "correct horse battery"


def remaining(response: Response) -> int:
    return int(response.headers["RateLimit-Remaining"])


async def test_two_gateways_spend_one_anonymous_budget(
    database_url: str, redis_url: str, http_impl: str
) -> None:
    env = {"REDIS_URL": redis_url, "RATE_LIMIT_ANON": "4/minute"}
    async with (
        running_gateway(database_url, http_impl, **env) as (a, _),
        running_gateway(database_url, http_impl, **env) as (b, _),
    ):
        seen = [remaining(await api.get(ME)) for api in (a, b, a, b)]
        assert seen == [3, 2, 1, 0]

        for api in (a, b):
            refused = await api.get(ME)
            assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1


async def test_two_gateways_spend_one_login_budget(
    database_url: str, redis_url: str, http_impl: str
) -> None:
    env = {"REDIS_URL": redis_url, "RATE_LIMIT_LOGIN": "2/minute"}
    async with (
        running_gateway(database_url, http_impl, **env) as (a, ctx),
        running_gateway(database_url, http_impl, **env) as (b, _),
    ):
        user, _ = await UserFactory(ctx).create(password=PASSWORD)
        body = {"email": user.email, "password": PASSWORD}
        assert (await a.post(LOGIN, json=body)).status == 200
        assert (await b.post(LOGIN, json=body)).status == 200
        assert (await a.post(LOGIN, json=body)).status == 429
        assert (await b.post(LOGIN, json=body)).status == 429


async def test_budgets_hold_locally_and_logins_fail_closed_while_redis_is_down(
    database_url: str, redis_url: str, redis_server: RedisServer, http_impl: str
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "RATE_LIMIT_ANON": "3/minute",
        "RATE_LIMIT_LOGIN": "5/minute",
        "TRUSTED_PROXIES": "127.0.0.1/32",
    }
    hosts = itertools.count(1)

    def elsewhere() -> dict[str, str]:
        """A request our trusted proxy forwards from a client IP not seen before."""
        return {"X-Forwarded-For": f"192.0.2.{next(hosts)}"}

    async with running_gateway(database_url, http_impl, **env) as (api, ctx):
        user, _ = await UserFactory(ctx).create(password=PASSWORD)
        body = {"email": user.email, "password": PASSWORD}
        assert (await api.get(ME)).status == 401  # shared budget: 2 left in Redis
        redis_server.stop()
        try:
            started = time.perf_counter()
            statuses = [(await api.get(ME)).status for _ in range(4)]
            assert statuses == [401, 401, 401, 429]  # the local budget: 3/minute, never unlimited
            assert time.perf_counter() - started < 3.0  # a dead Redis costs no long waits

            login = await api.post(LOGIN, json=body, headers=elsewhere())
            assert login.status == 503, login
            assert login.headers["Content-Type"] == "application/problem+json"
            assert int(login.headers["Retry-After"]) >= 1
        finally:
            redis_server.start()

        async def login_works_again() -> bool:
            return (await api.post(LOGIN, json=body, headers=elsewhere())).status == 200

        await wait_for(login_works_again, timeout=10.0, interval=0.3)


async def test_two_gateways_spend_one_anonymous_budget_over_grpc(
    database_url: str, redis_url: str
) -> None:
    contexts, gateways, channels = [], [], []
    try:
        for _ in range(2):
            ctx = await build_context_with_jobs(
                make_settings(database_url, REDIS_URL=redis_url, RATE_LIMIT_ANON="3/minute")
            )
            gateway, addresses = await start_gateway(ctx, "fast")
            contexts.append(ctx)
            gateways.append(gateway)
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{addresses.grpc_port}"))
        stubs = [products_pb2_grpc.ProductServiceStub(channel) for channel in channels]
        codes = []
        for n in range(5):
            try:
                await stubs[n % 2].ListProducts(products_pb2.ListProductsRequest(), timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
        # One budget of 3 across both processes, whichever one answers.
        assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    finally:
        for channel in channels:
            await channel.close()
        for gateway in gateways:
            await gateway.stop_servers(1.0)
        for ctx in contexts:
            await ctx.close()
