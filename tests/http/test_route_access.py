"""Table-driven authorisation over every REST route: what each handler declares is enforced.

Every handler class declares `access = {"GET": "anyone", "POST": "admin", ...}` for each method
it implements. This test walks `feature_routes()`, so a new route cannot forget to declare who
may call it, and a route declared admin/staff cannot forget to check it.
"""

from __future__ import annotations

import re

import tornado.web

from server.app import feature_routes
from tests.conftest import ApiClient, UserFactory

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ACCESS_LEVELS = {"anyone", "user", "admin", "staff", "owner"}
_GROUP_RE = re.compile(r"\((?:\?P<\w+>)?[^()]*\)")


def implemented_methods(handler: type[tornado.web.RequestHandler]) -> list[str]:
    return [
        m
        for m in HTTP_METHODS
        if getattr(handler, m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())
    ]


def concrete_path(pattern: str) -> str:
    """A path the pattern matches, with every captured id replaced by 1."""
    path = _GROUP_RE.sub("1", pattern).lstrip("^").rstrip("$")
    return path[:-2] if path.endswith("/?") else path


def route_table() -> list[tuple[str, str, str, str]]:
    """(pattern, handler name, method, declared access) for every implemented method."""
    rows = []
    for pattern, handler in feature_routes():
        access = getattr(handler, "access", {})
        for method in implemented_methods(handler):
            rows.append((pattern, handler.__name__, method, access.get(method, "")))
    return rows


def test_the_route_table_is_not_empty_and_includes_auth() -> None:
    patterns = {row[0] for row in route_table()}
    assert any("/auth/login" in p for p in patterns)
    cancel = r"/api/v1/orders/(?P<order_id>[0-9]+)/cancel/?"
    assert concrete_path(cancel) == "/api/v1/orders/1/cancel"
    assert concrete_path(r"/api/v1/products/([0-9]+)/?") == "/api/v1/products/1"


def test_every_implemented_method_declares_who_may_call_it() -> None:
    undeclared = [
        f"{name}.{method} ({pattern})"
        for pattern, name, method, access in route_table()
        if access == ""
    ]
    unknown = [
        f"{name}.{method}={access}"
        for _, name, method, access in route_table()
        if access and access not in ACCESS_LEVELS
    ]
    assert not undeclared, f"handlers without an `access` entry: {undeclared}"
    assert not unknown, f"unknown access levels: {unknown}"


def test_no_access_entry_names_a_method_the_handler_lacks() -> None:
    stray = []
    for _, handler in feature_routes():
        declared = set(getattr(handler, "access", {}))
        stray += [f"{handler.__name__}.{m}" for m in declared - set(implemented_methods(handler))]
    assert not stray, stray


async def test_restricted_methods_refuse_anonymous_callers_with_401(api: ApiClient) -> None:
    failures = []
    for pattern, name, method, access in route_table():
        if access not in ("user", "owner", "admin", "staff"):
            continue  # public, or undeclared (the declaration test reports those)
        response = await api.request(method, concrete_path(pattern))
        if response.status != 401 or "WWW-Authenticate" not in response.headers:
            failures.append(f"{method} {pattern} ({name}, {access}): {response.status}")
    assert not failures, failures


async def test_admin_and_staff_methods_refuse_customers_with_403(
    api: ApiClient, make_user: UserFactory
) -> None:
    _, customer = await make_user.create("customer")
    failures = []
    for pattern, name, method, access in route_table():
        if access not in ("admin", "staff"):
            continue
        response = await api.request(method, concrete_path(pattern), token=customer)
        if response.status != 403:
            failures.append(f"{method} {pattern} ({name}, {access}): {response.status}")
    assert not failures, failures


async def test_admin_only_methods_refuse_service_accounts_with_403(
    api: ApiClient, make_user: UserFactory
) -> None:
    _, service = await make_user.create("service")
    failures = []
    for pattern, name, method, access in route_table():
        if access != "admin":
            continue
        response = await api.request(method, concrete_path(pattern), token=service)
        if response.status != 403:
            failures.append(f"{method} {pattern} ({name}): {response.status}")
    assert not failures, failures
