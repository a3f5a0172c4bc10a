"""GatewayApplication: Tornado's routing, remembered per path, with the same outcome."""

from __future__ import annotations

import tornado.web
from tornado import httputil

from server.http.fast.application import GatewayApplication


class ItemHandler(tornado.web.RequestHandler):
    pass


class ListHandler(tornado.web.RequestHandler):
    pass


class Missing(tornado.web.RequestHandler):
    pass


def _app() -> GatewayApplication:
    return GatewayApplication(
        [(r"/items/?", ListHandler), (r"/items/(?P<item_id>[0-9]+)/?", ItemHandler, {"k": 1})],
        max_body_size=1024,
        default_handler_class=Missing,
    )


def _route(app: GatewayApplication, path: str) -> tuple[object, ...]:
    start = httputil.RequestStartLine("GET", path, "HTTP/1.1")
    headers = httputil.HTTPHeaders({"Host": "shop.test"})
    delegate = app.find_handler(httputil.HTTPServerRequest(start_line=start, headers=headers))
    return (
        delegate.handler_class,
        delegate.handler_kwargs,
        delegate.path_args,
        delegate.path_kwargs,
    )


def test_a_remembered_path_routes_exactly_as_tornado_does() -> None:
    app = _app()
    first = _route(app, "/items/12?x=1")
    assert first == (ItemHandler, {"k": 1}, [], {"item_id": b"12"})
    assert app._routes == {"/items/12": first}
    assert _route(app, "/items/12?y=2") == first  # served from the memo: same outcome
    assert _route(app, "/items/") == (ListHandler, {}, [], {})


def test_unmatched_paths_are_never_remembered() -> None:
    app = _app()
    for n in range(50):
        assert _route(app, f"/nothing/{n}")[0] is Missing
    assert app._routes == {}


def test_the_memo_is_bounded() -> None:
    app = _app()
    app.ROUTE_MEMO_SIZE = 10
    for n in range(25):
        _route(app, f"/items/{n}")
    assert 0 < len(app._routes) <= 10
    assert _route(app, "/items/3") == (ItemHandler, {"k": 1}, [], {"item_id": b"3"})


def test_routes_added_later_take_effect_and_host_rules_turn_the_memo_off() -> None:
    app = _app()
    assert _route(app, "/items/5")[0] is ItemHandler
    app.add_handlers(r".*", [(r"/items/5", ListHandler)])  # a host rule, ahead of the others
    assert _route(app, "/items/5")[0] is ListHandler
    assert app._routes == {} and not app._memo_enabled
