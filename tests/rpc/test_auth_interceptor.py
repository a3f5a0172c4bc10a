"""gRPC authentication and rate limiting, through the real interceptors on a real server.

A test-only service (`test.v1.Probe`, raw bytes) is added to the gateway's gRPC server so every
call shape and rule can be observed directly; the storefront.v1 services are checked too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.context import AppContext
from server.rpc import auth
from server.rpc.pb.storefront.v1 import (
    cart_pb2,
    orders_pb2,
    orders_pb2_grpc,
    payments_pb2,
    products_pb2,
    webhooks_pb2,
)
from server.rpc.server import MAX_MESSAGE_BYTES, access_table
from server.runtime import build_gateway
from server.services import permissions
from tests.conftest import UserFactory, make_settings
from tests.forged_tokens import forged_authorizations
from workers.broker import build_context_with_jobs

SERVICE = "test.v1.Probe"


async def who_am_i(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    caller = auth.current_principal.get()
    return b"anonymous" if caller is None else f"{caller.user_id}:{caller.role}".encode()


async def admin_only(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    caller = await auth.require_principal(context)  # declared "admin" in PROBE_ACCESS
    return str(caller.user_id).encode()


async def signed_in_only(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    caller = await auth.require_principal(context)
    return str(caller.user_id).encode()


async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(float(request.decode()))
    return b"done"


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        await asyncio.sleep(0)  # the principal must survive suspension points
        yield f"{i}:{await who_am_i(request, context)!r}".encode()


PROBE = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
        "AdminOnly": grpc.unary_unary_rpc_method_handler(admin_only),
        "SignedInOnly": grpc.unary_unary_rpc_method_handler(signed_in_only),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Undeclared": grpc.unary_unary_rpc_method_handler(echo),  # no PROBE_ACCESS entry
    },
)


# The probe's methods declare their access like every feature's (services/permissions.py).
PROBE_ACCESS = {
    f"/{SERVICE}/{method}": level
    for method, level in {
        "WhoAmI": "anyone",
        "AdminOnly": "admin",
        "SignedInOnly": "user",
        "Slow": "anyone",
        "Echo": "anyone",
        "Count": "anyone",
    }.items()
}


@dataclass
class Probe:
    channel: grpc.aio.Channel
    ctx: AppContext
    users: UserFactory

    async def call(
        self,
        method: str,
        request: bytes = b"",
        *,
        authorization: str | None = None,
        deadline: float = 10.0,
    ) -> bytes:
        metadata = (("authorization", authorization),) if authorization is not None else None
        rpc = self.channel.unary_unary(f"/{SERVICE}/{method}")
        response: bytes = await rpc(request, metadata=metadata, timeout=deadline)
        return response

    async def code_of(self, method: str, request: bytes = b"", **kwargs: object) -> grpc.StatusCode:
        try:
            await self.call(method, request, **kwargs)  # type: ignore[arg-type]
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


async def running_probe(database_url: str, **env: str) -> AsyncIterator[Probe]:
    ctx = await build_context_with_jobs(make_settings(database_url, **env))
    gateway = build_gateway(ctx, http_impl="tornado")
    gateway.grpc.server.add_generic_rpc_handlers((PROBE,))
    gateway.grpc.access.update(PROBE_ACCESS)
    addresses = await gateway.start("127.0.0.1", 0, 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{addresses.grpc_port}")
    try:
        yield Probe(channel, ctx, UserFactory(ctx))
    finally:
        await channel.close()
        await gateway.stop_servers(1.0)
        await ctx.close()


@pytest_asyncio.fixture(scope="module")
async def probe(database_url: str) -> AsyncIterator[Probe]:
    async for p in running_probe(database_url):
        yield p


@pytest_asyncio.fixture(scope="module")
async def limited(database_url: str) -> AsyncIterator[Probe]:
    async for p in running_probe(
        database_url, RATE_LIMIT_ANON="3/minute", RATE_LIMIT_USER="2/minute"
    ):
        yield p


# ---- authentication -------------------------------------------------------------------------


async def test_a_call_without_a_token_passes_as_anonymous(probe: Probe) -> None:
    assert await probe.call("WhoAmI") == b"anonymous"


async def test_a_valid_token_names_the_caller(probe: Probe) -> None:
    user, token = await probe.users.create("customer")
    answer = await probe.call("WhoAmI", authorization=f"Bearer {token}")
    assert answer == f"{user.id}:customer".encode()


async def test_every_forged_token_is_refused_with_unauthenticated(probe: Probe) -> None:
    user, _ = await probe.users.create("customer")
    forged = forged_authorizations(probe.ctx.settings, user.id)
    assert len(forged) >= 20
    let_through = []
    for name, authorization in forged.items():
        code = await probe.code_of("WhoAmI", authorization=authorization)
        # An oversized header may be refused by the transport before our code sees it.
        allowed = {grpc.StatusCode.UNAUTHENTICATED}
        if name == "huge":
            allowed.add(grpc.StatusCode.RESOURCE_EXHAUSTED)
        if code not in allowed:
            let_through.append(f"{name}: {code}")
    assert not let_through, let_through


async def test_a_forged_token_is_refused_before_the_servicer_runs(probe: Probe) -> None:
    forged = forged_authorizations(probe.ctx.settings, 1)["tampered_role"]
    try:
        await probe.call("WhoAmI", authorization=forged)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "invalid access token" in (error.details() or "")
    else:
        raise AssertionError("a tampered token was accepted")


async def test_require_role_answers_unauthenticated_then_permission_denied(probe: Probe) -> None:
    _, customer = await probe.users.create("customer")
    admin, admin_token = await probe.users.create("admin")

    assert await probe.code_of("AdminOnly") == grpc.StatusCode.UNAUTHENTICATED
    denied = await probe.code_of("AdminOnly", authorization=f"Bearer {customer}")
    assert denied == grpc.StatusCode.PERMISSION_DENIED
    allowed = await probe.call("AdminOnly", authorization=f"Bearer {admin_token}")
    assert allowed == str(admin.id).encode()
    assert await probe.code_of("SignedInOnly") == grpc.StatusCode.UNAUTHENTICATED


async def test_concurrent_calls_each_see_their_own_caller(probe: Probe) -> None:
    callers = [await probe.users.create("customer") for _ in range(4)]
    calls = [probe.call("WhoAmI", authorization=f"Bearer {token}") for _, token in callers * 5]
    calls += [probe.call("WhoAmI") for _ in range(5)]

    answers = await asyncio.gather(*calls)

    expected = [f"{user.id}:customer".encode() for user, _ in callers * 5] + [b"anonymous"] * 5
    assert answers == expected


async def test_streaming_calls_are_guarded_too(probe: Probe) -> None:
    user, token = await probe.users.create("customer")
    stream = probe.channel.unary_stream(f"/{SERVICE}/Count")
    messages = [m async for m in stream(b"", metadata=(("authorization", f"Bearer {token}"),))]
    assert len(messages) == 3 and all(f"{user.id}:customer".encode() in m for m in messages)

    forged = forged_authorizations(probe.ctx.settings, user.id)["expired"]
    refused = stream(b"", metadata=(("authorization", forged),))
    try:
        _ = [m async for m in refused]
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        raise AssertionError("an expired token was accepted on a stream")


async def test_health_and_reflection_never_need_a_token(probe: Probe) -> None:
    forged = (("authorization", "Bearer forged.token.value"),)
    health = health_pb2_grpc.HealthStub(probe.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""), metadata=forged)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(probe.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in reflection.ServerReflectionInfo(iter([request]), metadata=forged)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert "grpc.health.v1.Health" in names


async def test_storefront_services_refuse_forged_tokens(probe: Probe) -> None:
    orders = orders_pb2_grpc.OrderServiceStub(probe.channel)
    for name, authorization in forged_authorizations(probe.ctx.settings, 1).items():
        if name == "huge":
            continue
        try:
            await orders.GetOrder(
                orders_pb2.GetOrderRequest(id=1),
                metadata=(("authorization", authorization),),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, name
        else:
            raise AssertionError(f"{name} was accepted")


# ---- transport limits -----------------------------------------------------------------------


async def test_a_deadline_ends_a_slow_call(probe: Probe) -> None:
    code = await probe.code_of("Slow", b"5", deadline=0.2)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await probe.call("Slow", b"0", deadline=5) == b"done"


async def test_messages_over_the_size_limit_are_refused(probe: Probe) -> None:
    assert await probe.call("Echo", b"x" * 1024) == b"x" * 1024
    code = await probe.code_of("Echo", b"x" * (MAX_MESSAGE_BYTES + 1))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


# ---- rate limits ----------------------------------------------------------------------------


async def test_anonymous_calls_are_budgeted_per_peer(limited: Probe) -> None:
    codes = [await limited.code_of("WhoAmI") for _ in range(4)]
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    try:
        await limited.call("WhoAmI")
    except grpc.aio.AioRpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        assert int(trailers["retry-after"]) >= 1
        assert trailers["ratelimit-remaining"] == "0" and trailers["ratelimit-limit"] == "3"
    else:
        raise AssertionError("the spent budget let a call through")


async def test_callers_are_budgeted_per_user(limited: Probe) -> None:
    _, alice = await limited.users.create("customer")
    _, bob = await limited.users.create("customer")
    codes = [await limited.code_of("WhoAmI", authorization=f"Bearer {alice}") for _ in range(3)]
    assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert await limited.code_of("WhoAmI", authorization=f"Bearer {bob}") == grpc.StatusCode.OK


@pytest_asyncio.fixture
async def refusing(database_url: str) -> AsyncIterator[Probe]:
    """A gateway of its own: a fresh anonymous budget of 3 a minute for this test's peer."""
    async for p in running_probe(database_url, RATE_LIMIT_ANON="3/minute"):
        yield p


async def test_refused_calls_spend_the_peers_budget_too(refusing: Probe) -> None:
    """As REST charges a request before answering 401: bad tokens cannot be tried unlimited."""
    forged = [await refusing.code_of("WhoAmI", authorization="Bearer forged") for _ in range(4)]
    assert forged == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert await refusing.code_of("WhoAmI") == grpc.StatusCode.RESOURCE_EXHAUSTED  # one budget


async def test_health_is_not_budgeted(limited: Probe) -> None:
    health = health_pb2_grpc.HealthStub(limited.channel)
    for _ in range(10):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_method_that_declares_no_access_is_refused(probe: Probe) -> None:
    assert await probe.code_of("Undeclared") == grpc.StatusCode.PERMISSION_DENIED
    _, admin = await probe.users.create("admin")
    assert (
        await probe.code_of("Undeclared", authorization=f"Bearer {admin}")
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_every_storefront_method_declares_its_access() -> None:
    """The gRPC twin of tests/http/test_route_access.py: one table, every method in it."""
    table = access_table()
    for module in (orders_pb2, products_pb2, cart_pb2, payments_pb2, webhooks_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                level = table.get(f"/{service.full_name}/{method.name}")
                assert level in permissions.ACCESS_LEVELS, (service.full_name, method.name)
