"""Operations: /metrics after real traffic, the JSON request log line, Sentry scrubbing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import grpc
import orjson
import pytest
import sentry_sdk
import tornado.web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sentry_sdk.transport import Transport

from server.context import AppContext
from server.db import catalog as repo
from server.observability import RequestLogger, configure_sentry, request_id_var, scrub_event
from server.rpc.pb.storefront.v1 import products_pb2, products_pb2_grpc
from tests.conftest import ApiClient, UserFactory
from tests.orders_support import insert_sellable
from tests.workers.logs import json_lines

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: ApiClient) -> Samples:
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def make_product(ctx: AppContext) -> repo.Product:
    return await insert_sellable(
        ctx.pool,
        {
            "sku": f"MET-{uuid.uuid4().hex[:10]}",
            "name": "Metered",
            "price": 100,
            "currency": "USD",
            "stock": 5,
            "is_active": True,
            "category_id": None,
        },
    )


async def test_http_requests_are_counted_by_route_template_and_status(
    api: ApiClient, ctx: AppContext
) -> None:
    product = await make_product(ctx)
    route = "/api/v1/products/{product_id}"
    before = await scrape(api)
    for _ in range(3):
        assert (await api.get(f"/api/v1/products/{product.id}")).status == 200
    assert (await api.get("/api/v1/products/999999999")).status == 404
    assert (await api.get("/api/v1/no/such/path/123")).status == 404

    after = await scrape(api)
    ok = dict(method="GET", route=route, status="200")
    served = value(after, "http_requests_total", **ok) - value(before, "http_requests_total", **ok)
    assert served == 3
    missing = dict(method="GET", route=route, status="404")
    assert value(after, "http_requests_total", **missing) >= 1
    assert value(after, "http_request_duration_seconds_count", **ok) >= 3
    assert value(after, "http_request_duration_seconds_bucket", le="+Inf", **ok) >= 3
    assert value(after, "http_requests_total", method="GET", route="unmatched", status="404") >= 1
    # Raw paths never become labels (ids would make a series per product).
    text = (await api.get("/metrics")).body.decode()
    assert f"/api/v1/products/{product.id}" not in text and "/no/such/path" not in text


async def test_unknown_methods_are_counted_as_other(api: ApiClient) -> None:
    """Clients cannot add series by inventing methods (the fast connection parses WebDAV's)."""
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        await api.request(method, "/api/v1/products")
    text = (await api.get("/metrics")).body.decode()
    assert 'method="other"' in text
    assert "PROPFIND" not in text and "MKCOL" not in text


async def test_grpc_calls_are_counted_by_method_and_code(
    api: ApiClient, ctx: AppContext, grpc_channel: grpc.aio.Channel
) -> None:
    stub = products_pb2_grpc.ProductServiceStub(grpc_channel)
    product = await make_product(ctx)
    before = await scrape(api)
    await stub.GetProduct(products_pb2.GetProductRequest(id=product.id))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetProduct(products_pb2.GetProductRequest(id=999_999_999))
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # refused by the auth interceptor
        await stub.AdjustStock(products_pb2.AdjustStockRequest(product_id=product.id, delta=1))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    after = await scrape(api)
    service = "storefront.v1.ProductService"

    def delta(method: str, code: str) -> float:
        labels = dict(grpc_service=service, grpc_method=method, grpc_code=code)
        return value(after, "grpc_server_handled_total", **labels) - value(
            before, "grpc_server_handled_total", **labels
        )

    assert delta("GetProduct", "OK") == 1 and delta("GetProduct", "NOT_FOUND") == 1
    assert delta("AdjustStock", "UNAUTHENTICATED") == 1
    assert (
        value(
            after,
            "grpc_server_handling_seconds_count",
            grpc_service=service,
            grpc_method="GetProduct",
            grpc_code="OK",
        )
        >= 1
    )


async def test_streaming_grpc_calls_are_counted_too(
    api: ApiClient, grpc_channel: grpc.aio.Channel
) -> None:
    # Reflection is stream-stream and ends OK; a health Watch is unary-stream, left by the
    # client after its first message: CANCELLED once the server notices.
    reflection = ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", "OK")
    watch = ("grpc.health.v1.Health", "Watch", "CANCELLED")

    def handled(samples: Samples, series: tuple[str, str, str]) -> float:
        service, method, code = series
        return value(
            samples,
            "grpc_server_handled_total",
            grpc_service=service,
            grpc_method=method,
            grpc_code=code,
        )

    before = await scrape(api)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reflect = reflection_pb2_grpc.ServerReflectionStub(grpc_channel)
    async for _ in reflect.ServerReflectionInfo(iter([request]), timeout=5):
        pass
    call = health_pb2_grpc.HealthStub(grpc_channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )
    first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    call.cancel()

    for _ in range(100):
        after = await scrape(api)
        if handled(after, watch) > handled(before, watch):
            break
        await asyncio.sleep(0.05)
    assert handled(after, reflection) - handled(before, reflection) == 1
    assert handled(after, watch) - handled(before, watch) == 1


async def test_database_cache_pool_and_build_series_are_exposed(
    api: ApiClient, ctx: AppContext
) -> None:
    product = await make_product(ctx)
    for _ in range(2):
        await api.get(f"/api/v1/products/{product.id}")
    samples = await scrape(api)
    assert value(samples, "db_query_duration_seconds_count", operation="SELECT") > 0
    assert value(samples, "db_query_duration_seconds_count", operation="INSERT") > 0
    assert value(samples, "db_pool_connections") >= 1
    assert value(samples, "db_pool_max_connections") >= ctx.settings.db_pool_max
    assert 0 <= value(samples, "db_pool_idle_connections") <= value(samples, "db_pool_connections")
    assert value(samples, "cache_lookups_total", namespace="products", result="miss") >= 1
    assert value(samples, "cache_lookups_total", namespace="products", result="local_hit") >= 1
    assert any(name == "storefront_build_info" and v == 1 for (name, _), v in samples.items())
    assert value(samples, "ratelimit_decisions_total", scope="anon", decision="allowed") >= 2


async def test_each_request_is_one_json_log_line(api: ApiClient, make_user: UserFactory) -> None:
    user, token = await make_user.create()
    with json_lines("storefront.access") as lines:
        response = await api.get(
            "/api/v1/auth/me", token=token, headers={"X-Request-ID": "trace-me-1"}
        )
        missing = await api.get("/api/v1/nowhere")
    assert response.status == 200 and missing.status == 404
    [line] = [entry for entry in lines if entry.get("request_id") == "trace-me-1"]
    assert line["method"] == "GET" and line["path"] == "/api/v1/auth/me"
    assert line["status"] == 200 and line["user_id"] == user.id
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["level"] == "INFO" and line["logger"] == "storefront.access"
    assert line["timestamp"].endswith("+00:00") and line["message"]
    [not_found] = [entry for entry in lines if entry.get("path") == "/api/v1/nowhere"]
    assert not_found["status"] == 404 and not_found["level"] == "WARNING"
    assert not_found["request_id"] == missing.headers["X-Request-ID"]
    assert "user_id" not in not_found


def test_with_log_level_warning_a_success_writes_no_access_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """LOG_LEVEL=WARNING keeps successes out of the access log (its cost is benchmarked with
    `make bench ARGS=--bare`, not timed here); failures are still written."""

    def finished(status: int) -> Any:
        class Handler:  # the attributes RequestLogger reads from a finished handler
            request_id = "abc"
            _principal_resolved = False

            class request:
                method = "GET"
                path = "/api/v1/products/1"

                @staticmethod
                def request_time() -> float:
                    return 0.002

            @staticmethod
            def get_status() -> int:
                return status

        return Handler()

    access = logging.getLogger("storefront.access")
    level = access.level
    access.setLevel(logging.WARNING)  # as with LOG_LEVEL=WARNING
    try:
        logger = RequestLogger({})
        with caplog.at_level(logging.WARNING, logger="storefront.access"):
            logger(finished(200))
            logger(finished(404))
    finally:
        access.setLevel(level)  # the other tests' access lines are INFO
    lines = [r for r in caplog.records if r.name == "storefront.access"]
    assert [r.levelno for r in lines] == [logging.WARNING]
    assert "404" in lines[0].getMessage()


# ---- Sentry -------------------------------------------------------------------------------------


class CapturingTransport(Transport):
    """Sentry's servers are out of reach: keep the events instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        for item in envelope.items:
            if item.type == "event":
                self.events.append(item.payload.json)


class FailingHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        raise RuntimeError("boom")


def test_scrubbing_keeps_only_what_locates_a_failure() -> None:
    token = request_id_var.set("req-scrub")
    try:
        event = scrub_event(
            {
                "request": {
                    "url": "http://x/api/v1/orders",
                    "method": "POST",
                    "headers": {
                        "Authorization": "Bearer secret",
                        "Cookie": "sid=1",
                        "X-Forwarded-For": "203.0.113.9",
                        "User-Agent": "curl",
                    },
                    "cookies": {"sid": "1"},
                    "data": {"password": "hunter2"},
                    "query_string": "email=ada@example.com",
                    "env": {"REMOTE_ADDR": "1.2.3.4"},
                },
                "user": {"id": 7, "email": "ada@example.com", "ip_address": "203.0.113.9"},
            }
        )
    finally:
        request_id_var.reset(token)
    assert event["request"] == {
        "url": "http://x/api/v1/orders",
        "method": "POST",
        "headers": {"User-Agent": "curl"},
    }
    assert event["user"] == {"id": 7} and event["tags"] == {"request_id": "req-scrub"}


async def test_sentry_events_carry_no_credentials_or_personal_data() -> None:
    from tornado.testing import bind_unused_port

    transport = CapturingTransport()
    assert configure_sentry("https://public@sentry.invalid/1", "testing", transport=transport)
    sock, port = bind_unused_port()
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/fail", FailingHandler)]))
    server.add_sockets([sock])
    client = ApiClient(f"http://127.0.0.1:{port}")
    try:
        response = await client.post(
            "/fail?email=ada@example.com",
            json={"password": "hunter2"},
            headers={"Authorization": "Bearer secret-token", "Cookie": "session=abc"},
        )
        assert response.status == 500
        sentry_sdk.flush()
    finally:
        client.close()
        server.stop()
        sentry_sdk.init()  # no DSN: Sentry off for the rest of the session
    [event] = [e for e in transport.events if e.get("exception")]
    dumped = orjson.dumps(event).decode()
    for secret in ("secret-token", "session=abc", "hunter2", "ada@example.com"):
        assert secret not in dumped
    assert event["request"]["method"] == "POST" and "/fail" in event["request"]["url"]
    headers = {k.lower() for k in event["request"].get("headers", {})}
    assert not headers & {"authorization", "cookie"}
