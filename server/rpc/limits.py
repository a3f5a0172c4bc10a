"""gRPC rate limiting: the same budgets as REST (per user, or per client IP when anonymous).

Runs after `AuthInterceptor` (list it second), so the caller is known; a call the
AuthInterceptor refuses (a bad token, a role too low) spends the peer's anonymous budget first
(`charge_refused`, its `before_refusal`), as REST does. A spent budget ends the call with
RESOURCE_EXHAUSTED and `retry-after` / `ratelimit-*` trailing metadata.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from typing_extensions import override

from server.config import Settings
from server.ratelimit import Decision, Network, RequestLimiter, Scope, client_address
from server.rpc.auth import current_principal
from server.rpc.interception import guard_handler, is_unguarded, metadata_value

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def peer_address(peer: str) -> str:
    """`ipv4:1.2.3.4:5678` → `1.2.3.4`; `ipv6:[::1]:5678` → `::1`; anything else as is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, limiter: RequestLimiter, settings: Settings) -> None:
        self.limiter = limiter
        self.trusted: tuple[Network, ...] = settings.trusted_proxies

    @override
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not self.limiter.enabled or is_unguarded(method):
            return handler
        forwarded = metadata_value(handler_call_details, "x-forwarded-for") or ""

        async def charge(context: grpc.aio.ServicerContext) -> None:
            caller = current_principal.get()
            if caller is not None:
                decision = await self.limiter.check(Scope.USER, str(caller.user_id))
            else:
                ip = client_address(peer_address(context.peer()), forwarded, self.trusted)
                decision = await self.limiter.check(Scope.ANON, ip)
            await _enforce(context, decision)

        return guard_handler(handler, charge)

    async def charge_refused(
        self, context: grpc.aio.ServicerContext, details: grpc.HandlerCallDetails
    ) -> None:
        """A call the AuthInterceptor refuses spends the peer's anonymous budget (so bad tokens
        cannot be tried without limit); RESOURCE_EXHAUSTED once it is spent."""
        if not self.limiter.enabled or is_unguarded(details.method):
            return
        forwarded = metadata_value(details, "x-forwarded-for") or ""
        ip = client_address(peer_address(context.peer()), forwarded, self.trusted)
        await _enforce(context, await self.limiter.check(Scope.ANON, ip))


async def _enforce(context: grpc.aio.ServicerContext, decision: Decision) -> None:
    if not decision.allowed:
        trailers = tuple((k.lower(), v) for k, v in decision.headers().items())
        detail = f"rate limit exceeded; retry in {decision.retry_after_seconds}s"
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, detail, trailers)
