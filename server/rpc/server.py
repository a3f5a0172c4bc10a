"""The grpc.aio server: health, reflection and the storefront.v1 services on the shared loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.context import AppContext
from server.rpc import cart, orders, payments, products, webhooks
from server.rpc.auth import AuthInterceptor
from server.rpc.limits import RateLimitInterceptor
from server.rpc.metrics import MetricsInterceptor
from server.rpc.requests import RequestCheckInterceptor

# A feature registers its servicer with a function taking (server, ctx) and returning the
# full service names it added (for health and reflection).
ServiceRegistrar = Callable[[grpc.aio.Server, AppContext], Sequence[str]]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_concurrent_streams", 256),
    ("grpc.so_reuseport", 1),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.http2.max_pings_without_data", 0),
]


def registrars() -> list[ServiceRegistrar]:
    """The storefront.v1 services; features append theirs here."""
    return [
        orders.register,
        products.register,
        cart.register,
        payments.register,
        webhooks.register,
    ]


def access_table() -> dict[str, str]:
    """Full method name → access level, from each feature's `ACCESS` (services/permissions)."""
    return {
        **orders.ACCESS,
        **products.ACCESS,
        **cart.ACCESS,
        **payments.ACCESS,
        **webhooks.ACCESS,
    }


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service_names: list[str]
    # Full method name → access level, as the AuthInterceptor checks it: a service added to
    # `server` later declares its methods here too.
    access: dict[str, str]

    async def start(self, host: str, port: int) -> int:
        """Bind and start; returns the bound port (useful with port 0)."""
        bound = self.server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return bound

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, let running calls finish within `grace`."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def default_interceptors(
    ctx: AppContext, access: dict[str, str]
) -> list[grpc.aio.ServerInterceptor]:
    """Metrics outermost (they count what the others refuse), authentication and access (it
    names the caller), then the caller's rate budget, then the request's own checks."""
    limits = RateLimitInterceptor(ctx.limiter, ctx.settings)
    return [
        MetricsInterceptor(),
        AuthInterceptor(ctx.tokens, access, before_refusal=limits.charge_refused),
        limits,
        RequestCheckInterceptor(),
    ]


def build_grpc_server(ctx: AppContext, *, interceptors: Sequence[Any] | None = None) -> GrpcServer:
    access = access_table()
    if interceptors is None:
        interceptors = default_interceptors(ctx, access)
    server = grpc.aio.server(interceptors=list(interceptors), options=SERVER_OPTIONS)
    names: list[str] = []
    for register in registrars():
        names.extend(register(server, ctx))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if ctx.settings.grpc_reflection:
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection([*names, health_name, reflection.SERVICE_NAME], server)
    return GrpcServer(server, health_servicer, names, access)
