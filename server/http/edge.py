"""What every REST request goes through before its handler: CORS, then its rate budget.

`build_before_request(ctx)` returns the hook `ApiHandler.prepare` awaits. Per request it does
one limiter call: the caller's user budget when a valid access token is sent, else the client
IP's anonymous budget. A request with an invalid token is charged to its IP and then refused
with 401, so forged tokens neither pass as anonymous nor dodge the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import tornado.httputil

from server.context import AppContext
from server.domain.errors import RateLimited, Unauthenticated
from server.http.base import ApiHandler
from server.http.cors import CorsPolicy
from server.http.fast.headers import canonical_name
from server.ratelimit import Decision, Network, RequestLimiter, Scope, client_address

BeforeRequest = Callable[[ApiHandler], Awaitable[None]]

# Operational routes (probes, metrics, docs) are not budgeted: probes come often from one IP.
LIMITED_PREFIX = "/api/v1/"


def client_ip(request: tornado.httputil.HTTPServerRequest, trusted: Sequence[Network]) -> str:
    return client_ip_of(request.remote_ip, request.headers, trusted)


def client_ip_of(
    peer: str | None, headers: tornado.httputil.HTTPHeaders, trusted: Sequence[Network]
) -> str:
    """The client's address: the peer's, or what trusted proxies say in X-Forwarded-For."""
    if not trusted:
        return peer or ""
    forwarded = ",".join(headers.get_list("X-Forwarded-For"))
    return client_address(peer or "", forwarded, trusted)


def request_budget(
    user_id: int | None,
    peer: str | None,
    headers: tornado.httputil.HTTPHeaders,
    trusted: Sequence[Network],
) -> tuple[Scope, str]:
    """The budget a request spends: its user's when a valid token came with it, else its client
    address's (also used by replayed answers, server/http/fast/replay.py)."""
    if user_id is not None:
        return Scope.USER, str(user_id)
    return Scope.ANON, client_ip_of(peer, headers, trusted)


def apply_decision(handler: ApiHandler, decision: Decision) -> None:
    """Put the budget on the response (it survives an error answer); 429 when it is spent."""
    handler.set_own_sticky_headers(
        {
            canonical_name(name): value
            for name, value in decision.headers().items()
            if name != "Retry-After"  # the 429 answer sets it from the error
        }
    )
    if not decision.allowed:
        raise RateLimited(retry_after=decision.retry_after_seconds)


async def charge_login(handler: ApiHandler, email: str) -> None:
    """Spend one login attempt of this client IP and e-mail (fails closed with 503)."""
    limiter: RequestLimiter = handler.ctx.limiter
    if not limiter.enabled:
        return
    ip = client_ip(handler.request, handler.ctx.settings.trusted_proxies)
    decision = await limiter.check(Scope.LOGIN, f"{ip}|{email.strip().lower()}")
    apply_decision(handler, decision)


def build_before_request(ctx: AppContext) -> BeforeRequest:
    cors = CorsPolicy(ctx.settings.cors_origins)
    limiter = ctx.limiter
    trusted = ctx.settings.trusted_proxies

    async def before_request(handler: ApiHandler) -> None:
        if cors.active and cors.apply(handler):
            return  # a preflight, answered
        if not limiter.enabled or not handler.request.path.startswith(LIMITED_PREFIX):
            return
        if not handler.rate_limited:
            return
        refused: Unauthenticated | None = None
        try:
            principal = handler.principal
        except Unauthenticated as exc:
            principal, refused = None, exc
        request = handler.request
        user_id = principal.user_id if principal is not None else None
        if handler.budget_by_ip:
            user_id = None
        budget = request_budget(user_id, request.remote_ip, request.headers, trusted)
        apply_decision(handler, await limiter.check(*budget))
        if refused is not None:
            raise refused

    return before_request
