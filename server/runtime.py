"""`storefront serve`: Tornado REST and grpc.aio side by side on one asyncio loop.

Shutdown on SIGTERM/SIGINT is graceful: stop accepting, let in-flight requests and calls
finish (up to a grace period), then close the pools and release the embedded database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from typing import Literal

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from server.app import make_app
from server.context import AppContext
from server.http.base import request_id_for
from server.http.fast import FastHTTPServer
from server.observability import flush_logs
from server.rpc.server import GrpcServer, build_grpc_server
from workers.inprocess import GatewayJobs

log = logging.getLogger(__name__)

HttpImpl = Literal["fast", "tornado"]
# Batched request-log lines reach stdout at most this late (milliseconds).
LOG_FLUSH_MS = 100


@dataclass
class Addresses:
    host: str
    http_port: int
    grpc_port: int


class Gateway:
    """One gateway process: the REST and gRPC servers and the context they share."""

    def __init__(
        self,
        ctx: AppContext,
        app: tornado.web.Application,
        grpc_server: GrpcServer,
        *,
        http_impl: HttpImpl = "fast",
    ) -> None:
        self.ctx = ctx
        self.app = app
        self.grpc = grpc_server
        self.http_impl = http_impl
        self._http: tornado.httpserver.HTTPServer | None = None
        self._fast: FastHTTPServer | None = None
        # View flushing, the broker, and (without Redis) the scheduler and the jobs.
        self.jobs = GatewayJobs(ctx)

    def _refusal_headers(self) -> tuple[tuple[str, str], ...]:
        """What every answer carries, also the fast connection's own refusals (a request it
        could not read has no X-Request-ID to echo: it gets a new one)."""
        return (("X-Request-ID", request_id_for(None)), *self.app.settings["security_headers"])

    async def start(
        self, host: str, http_port: int, grpc_port: int, *, reuse_port: bool = False
    ) -> Addresses:
        settings = self.ctx.settings
        sockets = tornado.netutil.bind_sockets(
            http_port, host, family=socket.AF_INET, reuse_port=reuse_port
        )
        bound_http = sockets[0].getsockname()[1]
        if self.http_impl == "fast":
            fast = FastHTTPServer(
                self.app,
                max_body_size=settings.max_body_size,
                body_timeout=settings.request_timeout,
                refusal_headers=self._refusal_headers,
            )
            for sock in sockets:
                await fast.listen(bound_http, host, sock=sock)
            self._fast = fast
        else:
            http = tornado.httpserver.HTTPServer(
                self.app,
                max_body_size=settings.max_body_size,
                max_header_size=64 * 1024,
                idle_connection_timeout=60,
                body_timeout=settings.request_timeout,
            )
            http.add_sockets(sockets)
            self._http = http
        bound_grpc = await self.grpc.start(host, grpc_port)
        await self.ctx.live.start()
        await self.jobs.start()
        return Addresses(host, bound_http, bound_grpc)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, drain, then close the pools and the embedded database."""
        await self.stop_servers(grace)
        await self.ctx.close()

    async def stop_servers(self, grace: float) -> None:
        """Stop accepting and let in-flight requests and calls finish within `grace`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Live streams never finish by themselves: they are told to close (clients reconnect
        # to another replica).
        self.ctx.live.close_all("shutdown")
        if self._fast is not None:
            self._fast.stop()
        if self._http is not None:
            self._http.stop()
        grpc_stop = asyncio.ensure_future(self.grpc.stop(grace))
        await self.app.settings["inflight"].wait_idle(grace)
        if self._fast is not None:
            await self._fast.close_all_connections(max(0.0, deadline - loop.time()))
        if self._http is not None:
            await self._http.close_all_connections()
        await grpc_stop
        await self.jobs.stop()
        await self.ctx.live.stop()


def build_gateway(ctx: AppContext, *, http_impl: HttpImpl = "fast") -> Gateway:
    return Gateway(ctx, make_app(ctx), build_grpc_server(ctx), http_impl=http_impl)


async def serve(
    ctx: AppContext,
    host: str,
    http_port: int,
    grpc_port: int,
    *,
    http_impl: HttpImpl = "fast",
    reuse_port: bool = False,
    grace: float = 10.0,
) -> None:
    gateway = build_gateway(ctx, http_impl=http_impl)
    addresses = await gateway.start(host, http_port, grpc_port, reuse_port=reuse_port)
    print(
        f"REST  http://{addresses.host}:{addresses.http_port}/api/v1  (docs /api/docs)", flush=True
    )
    print(
        f"gRPC  {addresses.host}:{addresses.grpc_port}  (storefront.v1, grpc.health.v1)", flush=True
    )
    log_flusher = tornado.ioloop.PeriodicCallback(flush_logs, LOG_FLUSH_MS)
    log_flusher.start()
    # What start-up built (modules, classes, the app, ~50 000 objects) lives as long as the
    # process: out of the collector's sight, so that a full collection walks only what serving
    # holds (the caches) and pauses the loop for that long, not for the whole heap.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight requests for up to %.0fs", grace)
    await gateway.shutdown(grace)
    log_flusher.stop()
    flush_logs()
