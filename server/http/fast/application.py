"""The gateway's `tornado.web.Application`: Tornado's routing, remembered per path.

Tornado finds a request's handler by trying every route's regular expression in turn, through two
router layers, for every request. The gateway's routes depend on the path alone, so the outcome
for a path is remembered: the next request for that path builds its handler delegate directly.
The memo is bounded (it is emptied when full, so a scan of random paths costs what it did before)
and only holds paths that matched a route, never 404s. Apps whose rules could depend on more than
the path (host rules, custom matchers, nested routers) are routed by Tornado every time.

With a `replayer` setting (server/http/fast/replay.py), each request first meets a delegate that may
answer it from an offered response; every other request is routed as above.

Tornado's template UI modules are dropped too: a JSON API renders no templates, and the stock
`RequestHandler.__init__` builds a namespace of them for every request.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from tornado import httputil, routing
from typing_extensions import override

from server.http.bodylimit import BodyLimitedApplication
from server.http.fast.replay import Replayer, ReplayingDelegate

_Route = tuple[type[tornado.web.RequestHandler], dict[str, Any], list[bytes], dict[str, bytes]]


class GatewayApplication(BodyLimitedApplication):
    ROUTE_MEMO_SIZE = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ui_modules = {}
        self.ui_methods = {}
        self._routes: dict[str, _Route] = {}
        self._memo_enabled = self._routes_depend_on_path_only()

    @override
    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        replayer: Replayer | None = self.settings.get("replayer")
        if replayer is None or self.transforms:
            # Output transforms (gzip) would change what a replay sends: handlers answer all.
            return super().start_request(server_conn, request_conn)

        def route() -> httputil.HTTPMessageDelegate:
            return BodyLimitedApplication.start_request(self, server_conn, request_conn)

        return ReplayingDelegate(replayer, request_conn, route)

    @override
    def add_handlers(self, host_pattern: str, host_handlers: Any) -> None:
        super().add_handlers(host_pattern, host_handlers)
        self._routes.clear()
        self._memo_enabled = self._routes_depend_on_path_only()

    def _routes_depend_on_path_only(self) -> bool:
        outer = self.default_router.rules
        if len(outer) != 1 or outer[0].target is not self.wildcard_router:
            return False  # host-specific rules were added
        return all(
            isinstance(rule.matcher, routing.PathMatches)
            and isinstance(rule.target, type)
            and issubclass(rule.target, tornado.web.RequestHandler)
            for rule in self.wildcard_router.rules
        )

    @override
    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        path = request.path
        route = self._routes.get(path)
        if route is not None:
            return self.get_handler_delegate(request, *route)
        delegate = super().find_handler(request, **kwargs)
        if self._memo_enabled and self._matched_a_route(delegate):
            if len(self._routes) >= self.ROUTE_MEMO_SIZE:
                self._routes.clear()
            self._routes[path] = (
                delegate.handler_class,
                delegate.handler_kwargs,
                delegate.path_args,
                delegate.path_kwargs,
            )
        return delegate

    def _matched_a_route(self, delegate: Any) -> bool:
        # A path no rule matched reaches the default (404) handler: never memoised.
        fallbacks = (self.settings.get("default_handler_class"), tornado.web.ErrorHandler)
        return delegate.handler_class not in fallbacks
