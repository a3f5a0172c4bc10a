"""make_app(ctx): the Tornado application, collecting each feature module's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web

from server.context import AppContext
from server.domain.principal import Principal
from server.http import (
    auth,
    base,
    cart,
    catalog,
    docs,
    edge,
    health,
    orders,
    payments,
    promotions,
    stats,
    stream,
    webhooks,
)
from server.http import metrics as metrics_http
from server.http.fast.application import GatewayApplication
from server.http.fast.headers import canonical_name
from server.http.fast.replay import Replayer
from server.observability import RequestLogger, bind_request_context
from server.openapi import openapi_path

Authenticator = Callable[[str], Principal]
BeforeRequest = Callable[[base.ApiHandler], Awaitable[None]]


def security_headers(ctx: AppContext) -> tuple[tuple[str, str], ...]:
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    ]
    if ctx.settings.is_production:
        headers.append(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))
    # Canonical names: ApiHandler.clear() composes them into every response as they are.
    return tuple((canonical_name(name), value) for name, value in headers)


def feature_routes() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """Every feature module ends with its `routes`; the order here is only for readability."""
    routes: list[tuple[str, type[tornado.web.RequestHandler]]] = []
    for module in (
        health,
        auth,
        orders,
        payments,
        catalog,
        cart,
        promotions,
        stats,
        webhooks,
        stream,
        docs,
        metrics_http,
    ):
        routes.extend(module.routes)
    return routes


def make_app(
    ctx: AppContext,
    *,
    authenticator: Authenticator | None = None,
    before_request: BeforeRequest | None = None,
    **settings: Any,
) -> tornado.web.Application:
    routes = feature_routes()
    handlers = [tornado.web.url(pattern, handler, {"ctx": ctx}) for pattern, handler in routes]
    # Requests are logged and measured by route template, never by raw path.
    # The template is the route's OpenAPI path, so dashboards and the schema use one name.
    templates = {handler: openapi_path(pattern)[0] for pattern, handler in routes}
    request_logger = RequestLogger(templates)
    inflight = base.InFlight()
    # Replayed responses skip the handler, so only with the edge they were built for.
    authenticate = authenticator or ctx.tokens.authenticate_header
    replayer = (
        Replayer(authenticate, ctx.limiter, ctx.settings.trusted_proxies, request_logger, inflight)
        if before_request is None
        else None
    )
    return GatewayApplication(
        handlers,
        max_body_size=ctx.settings.max_body_size,
        default_handler_class=base.NotFoundHandler,
        default_handler_args={"ctx": ctx},
        security_headers=security_headers(ctx),
        authenticator=authenticate,
        before_request=bind_request_context(before_request or edge.build_before_request(ctx)),
        log_function=request_logger,
        replayer=replayer,
        serve_traceback=ctx.settings.debug,
        inflight=inflight,
        openapi_routes=tuple(routes),  # what /api/schema describes (server/http/docs.py)
        **settings,
    )
