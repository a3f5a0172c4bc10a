"""Live updates at /api/v1/stream over WebSocket and SSE, on both HTTP servers: a customer hears
their own orders and nobody else's, anyone hears the stock and price of the products they
follow, tokens bound a stream's life, caps and slow consumers, shutdown, and two gateways on one
Redis (a change through one reaches the other's clients)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import tornado.httpclient

from server import metrics
from server.context import AppContext
from server.http.stream import WRITE_TIMEOUT_SECONDS
from server.services import catalog
from tests.conftest import ApiClient, running_gateway, wait_for
from tests.orders_support import Accounts, create_product, fill_cart
from tests.stream_support import SseStream, WsStream, stream_query

ORDERS = "/api/v1/orders"
TRANSPORTS = ("websocket", "sse")


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


@pytest.fixture(scope="module")
async def admin(accounts: Accounts) -> str:
    return (await accounts.create("admin"))[1]


@pytest.fixture
def port(api: ApiClient) -> int:
    return int(api.base_url.rsplit(":", 1)[1])


async def open_stream(
    transport: str, port: int, path: str, headers: dict[str, str] | None = None
) -> WsStream | SseStream:
    if transport == "websocket":
        return await WsStream.open(port, path, headers=headers)
    stream = await SseStream.open(port, path, headers=headers)
    assert stream.status == 200, (stream.status, stream.body)
    assert "text/event-stream" in stream.head
    return stream


async def refusal(transport: str, port: int, path: str) -> tuple[int, dict[str, object]]:
    """Status and problem body of a stream the gateway refuses."""
    if transport == "websocket":
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await WsStream.open(port, path)
        response = refused.value.response
        assert response is not None
        assert response.headers["Content-Type"].startswith("application/problem+json")
        return refused.value.code, orjson.loads(response.body)
    stream = await SseStream.open(port, path)
    stream.close()
    assert "application/problem+json" in stream.head
    return stream.status, stream.json()


async def checkout(api: ApiClient, ctx: AppContext, user_id: int, token: str, product: int) -> int:
    await fill_cart(ctx.pool, user_id, {product: 1})
    response = await api.post(ORDERS, json={}, token=token)
    assert response.status == 201, response.json()
    order_id: int = response.json()["id"]
    return order_id


# ---- what each caller hears ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_customer_hears_their_own_orders_and_nobody_elses(
    transport: str, api: ApiClient, ctx: AppContext, accounts: Accounts, port: int
) -> None:
    me, my_token = await accounts.create()
    other, other_token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    stream = await open_stream(
        transport, port, stream_query(orders=True), {"Authorization": f"Bearer {my_token}"}
    )
    try:
        ready = await stream.next()
        assert ready is not None and ready["type"] == "ready"
        assert ready["topics"] == [f"order:{me.id}"]
        await checkout(api, ctx, other.id, other_token, product)  # not mine: never heard
        mine = await checkout(api, ctx, me.id, my_token, product)
        created = await stream.next()
        assert created is not None and created["type"] == "order.created"
        assert created["data"]["id"] == mine and created["topic"] == f"order:{me.id}"
        assert time.time() - created["sent_at"] < 5
        paid = await api.post(
            f"{ORDERS}/{mine}/payments", json={"token": "tok_visa"}, token=my_token
        )
        assert paid.status in (200, 201), paid.json()
        following = await stream.next()
        assert following is not None and following["type"] == "order.paid"
        assert following["data"]["id"] == mine and following["data"]["status"] == "paid"
    finally:
        stream.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_anyone_hears_stock_and_price_of_the_products_they_follow(
    transport: str, api: ApiClient, ctx: AppContext, admin: str, port: int
) -> None:
    followed = await create_product(ctx.pool, stock=10, price=1500)
    unfollowed = await create_product(ctx.pool, stock=10)
    stream = await open_stream(transport, port, stream_query([followed]))
    try:
        assert (await stream.next() or {})["type"] == "ready"
        await catalog.adjust_stock(ctx, unfollowed, 3)
        await catalog.adjust_stock(ctx, followed, 4)
        stock = await stream.next()
        assert stock is not None and stock["type"] == "stock.changed"
        assert stock["data"]["product_id"] == followed and stock["data"]["stock"] == 14
        changed = await api.patch(f"/api/v1/products/{followed}", json={"price": 1250}, token=admin)
        assert changed.status == 200, changed.json()
        price = await stream.next()
        assert price is not None and price["type"] == "product.updated"
        assert price["data"]["product_id"] == followed and price["data"]["price"] == 1250
        assert "sku" not in price["data"]  # the public figures only
    finally:
        stream.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_browser_passes_its_token_in_the_query(
    transport: str, api: ApiClient, ctx: AppContext, accounts: Accounts, port: int
) -> None:
    me, token = await accounts.create()
    stream = await open_stream(transport, port, stream_query(orders=True, token=token))
    try:
        ready = await stream.next()
        assert ready is not None and ready["topics"] == [f"order:{me.id}"]
    finally:
        stream.close()


# ---- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        (stream_query(orders=True), 401, None),  # own orders need a token
        (stream_query(orders=True, token="not-a-token"), 401, None),
        ("/api/v1/stream", 422, None),  # nothing to follow
        ("/api/v1/stream?product_id=abc", 400, "product_id"),
        ("/api/v1/stream?product_id=0", 400, "product_id"),
        (stream_query(list(range(1, 52))), 400, "product_id"),  # over MAX_PRODUCTS
    ],
)
async def test_bad_streams_are_refused_with_a_problem(
    transport: str, port: int, path: str, status: int, field: str | None
) -> None:
    code, problem = await refusal(transport, port, path)
    assert code == status, problem
    if field is not None:
        assert field in str(problem)


async def test_a_websocket_from_a_foreign_origin_is_refused(port: int) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await WsStream.open(port, stream_query([1]), headers={"Origin": "https://evil.example"})
    assert refused.value.code == 403


_UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
_KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (_UPGRADE + _KEY, 426),  # no version
        (_UPGRADE + _KEY + b"Sec-WebSocket-Version: 8\r\n", 426),
        (_UPGRADE + b"Sec-WebSocket-Version: 13\r\n", 400),  # no key
    ],
    ids=["no-version", "version-8", "no-key"],
)
async def test_a_refused_websocket_handshake_is_a_problem(
    port: int, headers: bytes, status: int
) -> None:
    head = b"GET /api/v1/stream?product_id=1 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = answer.decode("latin-1").split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        body = await reader.readexactly(int(fields["content-length"]))
    finally:
        writer.close()
    assert lines[0].split()[1] == str(status)
    assert fields["content-type"] == "application/problem+json"
    assert orjson.loads(body)["status"] == status
    if status == 426:
        assert fields["sec-websocket-version"] == "13"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_ends_when_its_token_expires(
    transport: str, ctx: AppContext, accounts: Accounts, port: int
) -> None:
    me, _ = await accounts.create()
    ttl = ctx.settings.access_token_ttl
    # Issued long enough ago that two seconds are left (and the verifier's leeway is spent).
    token = ctx.tokens.issue_access(me.id, me.role, now=int(time.time()) - ttl + 2)
    stream = await open_stream(transport, port, stream_query(orders=True, token=token))
    try:
        assert (await stream.next() or {})["type"] == "ready"
        closing = await stream.next(timeout=10)
        assert closing is not None
        assert closing == {"type": "closing", "reason": "expired", "sent_at": closing["sent_at"]}
        assert await stream.next() is None  # and then the stream ends
        if isinstance(stream, WsStream):
            assert stream.conn.close_code == 4001
    finally:
        stream.close()


# ---- caps, slow consumers, shutdown, metrics -----------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_caps_per_user_and_per_gateway(
    transport: str, database_url: str, http_impl: str, accounts: Accounts
) -> None:
    me, token = await accounts.create()
    async with running_gateway(
        database_url, http_impl, STREAM_MAX_PER_USER="2", STREAM_MAX_CONNECTIONS="3"
    ) as (api, gateway_ctx):
        port = int(api.base_url.rsplit(":", 1)[1])
        mine = stream_query(orders=True, token=gateway_ctx.tokens.issue_access(me.id, me.role))
        held = [await open_stream(transport, port, mine) for _ in range(2)]
        code, problem = await refusal(transport, port, mine)
        assert code == 429 and "per user" in str(problem["detail"])
        held.append(await open_stream(transport, port, stream_query([1])))
        code, _ = await refusal(transport, port, stream_query([1]))
        assert code == 503
        for stream in held:
            assert (await stream.next() or {})["type"] == "ready"
        held.pop().close()  # a closed stream frees its place
        await wait_for(lambda: gateway_ctx.live.open_streams == 2)
        again = await open_stream(transport, port, stream_query([1]))
        assert (await again.next() or {})["type"] == "ready"
        for stream in [*held, again]:
            stream.close()
        await wait_for(lambda: gateway_ctx.live.open_streams == 0)
        del token


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_consumer_that_stops_reading_is_dropped(
    transport: str, ctx: AppContext, port: int
) -> None:
    product = await create_product(ctx.pool, stock=1)
    before = metrics.STREAM_DROPPED._value.get()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    path = stream_query([product])
    upgrade = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        if transport == "websocket"
        else "Accept: text/event-stream\r\n"
    )
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{upgrade}\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.split(b" ")[1] in (b"101", b"200")
    await wait_for(lambda: ctx.live.open_streams >= 1)
    # Never read again: the socket buffers fill, the sender blocks, the queue overflows.
    blob = "x" * 32_000
    for _ in range(2_000):
        await ctx.live.publish(f"product:{product}", {"type": "stock.changed", "data": blob})
        if metrics.STREAM_DROPPED._value.get() > before:
            break
        await asyncio.sleep(0)
    await wait_for(lambda: metrics.STREAM_DROPPED._value.get() > before, timeout=15)
    # Released once the blocked write times out and the close handshake gives up: at most
    # WRITE_TIMEOUT_SECONDS + Tornado's 5 s wait for the close frame, plus a margin.
    await wait_for(lambda: ctx.live.open_streams == 0, timeout=WRITE_TIMEOUT_SECONDS + 5 + 5)
    writer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_shutdown_tells_streams_to_go_and_counts_them_in_metrics(
    transport: str, database_url: str, http_impl: str
) -> None:
    async with running_gateway(database_url, http_impl) as (api, _):
        port = int(api.base_url.rsplit(":", 1)[1])
        stream = await open_stream(transport, port, stream_query([1]))
        assert (await stream.next() or {})["type"] == "ready"
        scraped = (await api.get("/metrics")).body.decode()
        assert f'stream_connections{{transport="{transport}"}} 1.0' in scraped
        # The request is measured at its opening (101, or the SSE stream's first event), so
        # the open stream is already in the route's latency histogram, and in its fast buckets.
        opened = re.search(
            r'http_request_duration_seconds_bucket\{le="0.5",method="GET",'
            r'route="/api/v1/stream",status="(101|200)"\} (\d+)',
            scraped,
        )
        assert opened is not None and int(opened.group(2)) >= 1, scraped[-3000:]
    closing = await stream.next()
    assert closing is not None and closing["type"] == "closing" and closing["reason"] == "shutdown"
    assert await stream.next() is None
    if isinstance(stream, WsStream):
        assert stream.conn.close_code == 1001
    stream.close()


# ---- across replicas ----------------------------------------------------------------------------


@pytest.fixture
async def two_gateways(
    database_url: str, http_impl: str, redis_url: str
) -> AsyncIterator[tuple[tuple[ApiClient, AppContext], tuple[ApiClient, AppContext]]]:
    async with (
        running_gateway(database_url, http_impl, REDIS_URL=redis_url) as first,
        running_gateway(database_url, http_impl, REDIS_URL=redis_url) as second,
    ):
        yield first, second


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_change_through_one_gateway_reaches_the_other_gateways_clients(
    transport: str,
    two_gateways: tuple[tuple[ApiClient, AppContext], tuple[ApiClient, AppContext]],
) -> None:
    (api_a, ctx_a), (api_b, ctx_b) = two_gateways
    accounts = Accounts(ctx_a)
    customer, token = await accounts.create()
    product = await create_product(ctx_a.pool, stock=10)
    port_b = int(api_b.base_url.rsplit(":", 1)[1])
    mine = await open_stream(transport, port_b, stream_query(orders=True, token=token))
    stock = await open_stream(transport, port_b, stream_query([product]))
    try:
        assert (await mine.next() or {})["type"] == "ready"
        assert (await stock.next() or {})["type"] == "ready"
        order_id = await checkout(api_a, ctx_a, customer.id, token, product)  # through A
        created = await mine.next()
        assert created is not None and created["type"] == "order.created"
        assert created["data"]["id"] == order_id
        left = await stock.next()
        assert left is not None and left["type"] == "stock.changed"
        assert left["data"]["product_id"] == product and left["data"]["stock"] == 9
    finally:
        mine.close()
        stock.close()
    del ctx_b
