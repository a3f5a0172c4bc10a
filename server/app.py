"""make_app(ctx): the Tornado application, collecting each feature module's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web

from server.context import AppContext
from server.http import base, health
from server.services.principal import Principal

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
    return tuple(headers)


def feature_routes() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """Every feature module ends with its `routes`; the order here is only for readability."""
    routes: list[tuple[str, type[tornado.web.RequestHandler]]] = []
    for module in (health,):
        routes.extend(module.routes)
    return routes


def make_app(
    ctx: AppContext,
    *,
    authenticator: Authenticator | None = None,
    before_request: BeforeRequest | None = None,
    **settings: Any,
) -> tornado.web.Application:
    handlers = [tornado.web.url(pattern, handler, {"ctx": ctx}) for pattern, handler in feature_routes()]
    return tornado.web.Application(
        handlers,
        default_handler_class=base.NotFoundHandler,
        default_handler_args={"ctx": ctx},
        security_headers=security_headers(ctx),
        authenticator=authenticator or ctx.tokens.authenticate_header,
        before_request=before_request,
        serve_traceback=ctx.settings.debug,
        inflight=base.InFlight(),
        **settings,
    )
