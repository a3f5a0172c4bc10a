"""Replayed product reads (server/http/fast/replay.py): the same answer as the handler's, the same
per-request work (limit, request id, metrics, log, views), never stale, never for a caller whose
answer could differ. On both HTTP connections."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
from tornado.httputil import HTTPServerRequest

from server import metrics
from server.context import AppContext
from server.http.catalog import ProductHandler
from server.http.fast.replay import Key, Replay, ReplayCache
from server.runtime import Gateway
from server.services import accounts
from tests.conftest import (
    ApiClient,
    RedisServer,
    Response,
    UserFactory,
    make_settings,
    start_gateway,
)
from tests.http.test_catalog import create_product
from workers.broker import build_context_with_jobs

ROUTE = "/api/v1/products/{product_id}"
PER_REQUEST = {"date", "x-request-id", "ratelimit-remaining", "ratelimit-reset"}


@dataclass
class Shop:
    api: ApiClient
    ctx: AppContext
    gateway: Gateway
    admin: str
    replays: list[str]  # targets answered from the replay cache
    callers: list[int | None]  # and for whom
    client: str = "192.0.2.1"  # X-Forwarded-For of this test's anonymous caller

    async def get(self, path: str, **headers: str) -> Response:
        """An anonymous GET from this test's own client address (its own rate budget)."""
        return await self.api.get(path, headers={"X-Forwarded-For": self.client, **headers})


def _counting(cache: ReplayCache, seen: list[str], callers: list[int | None]) -> None:
    original: Callable[[Key], Replay | None] = cache.get

    def get(key: Key) -> Replay | None:
        entry = original(key)
        if entry is not None:
            seen.append(key[0])
            callers.append(key[1])
        return entry

    cache.get = get  # type: ignore[method-assign]


@pytest_asyncio.fixture(scope="module", params=["local budgets", "budgets in Redis"])
async def shop(
    database_url: str, http_impl: str, redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[Shop]:
    # Client addresses are never reused, so the shared Redis needs no flushing.
    shared = {"REDIS_URL": redis_server.url} if request.param == "budgets in Redis" else {}
    settings = make_settings(
        database_url,
        RATE_LIMIT_ANON="8/minute",
        CORS_ORIGINS="https://shop.test",
        TRUSTED_PROXIES="127.0.0.1/32",
        **shared,
    )
    ctx = await build_context_with_jobs(settings)
    gateway, addresses = await start_gateway(ctx, http_impl)
    api = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
    _, admin = await UserFactory(ctx).create("admin")
    seen: list[str] = []
    callers: list[int | None] = []
    _counting(gateway.app.settings["replayer"].responses, seen, callers)
    try:
        yield Shop(api, ctx, gateway, admin, seen, callers)
    finally:
        api.close()
        await gateway.stop_servers(1.0)
        await ctx.close()


_clients = iter(range(1, 60_000))


@pytest.fixture(autouse=True)
def own_client(shop: Shop) -> None:
    # Every test is a new client address, with a full anonymous budget.
    n = next(_clients)
    shop.client = f"10.{n // 250}.{n % 250}.7"
    shop.replays.clear()
    shop.callers.clear()


def _comparable(response: Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in PER_REQUEST}


async def test_a_replayed_read_is_the_answer_the_handler_gave(shop: Shop) -> None:
    product = await create_product(shop.api, shop.admin)
    path = f"/api/v1/products/{product['id']}"
    # The first answer is the handler's and is offered; the next is a replay (a third try
    # covers a shared version that went stale between the write and the first read).
    answers = [await shop.get(path)]
    while not shop.replays and len(answers) < 3:
        answers.append(await shop.get(path))
    first, second = answers[-2], answers[-1]
    assert shop.replays == [path]
    assert first.status == second.status == 200
    assert second.body == first.body and second.json() == product
    assert _comparable(second) == _comparable(first)
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    spent = int(first.headers["RateLimit-Remaining"]) - int(second.headers["RateLimit-Remaining"])
    assert spent == 1
    assert second.headers["Date"] and second.headers["Vary"] == "Origin, Authorization"


async def test_a_write_retires_the_replayed_answer(shop: Shop) -> None:
    product = await create_product(shop.api, shop.admin)
    path = f"/api/v1/products/{product['id']}"
    for _ in range(2):
        assert (await shop.get(path)).json()["price"] == product["price"]
    patched = await shop.api.patch(path, json={"price": 777}, token=shop.admin)
    assert patched.status == 200
    assert (await shop.get(path)).json()["price"] == 777
    deleted = await shop.api.delete(path, token=shop.admin)
    assert deleted.status == 204
    assert (await shop.get(path)).status == 404  # not the replay of the active product


async def test_callers_whose_answer_could_differ_meet_the_handler(shop: Shop) -> None:
    product = await create_product(shop.api, shop.admin)
    path = f"/api/v1/products/{product['id']}"
    first = await shop.get(path)
    shop.replays.clear()
    etag = first.headers["ETag"]
    assert (await shop.get(path, **{"If-None-Match": etag})).status == 304
    cors = await shop.get(path, Origin="https://shop.test")
    assert cors.headers["Access-Control-Allow-Origin"] == "https://shop.test"
    admin = await shop.api.get(path, token=shop.admin)
    assert admin.status == 200 and "RateLimit-Limit" in admin.headers
    bad = await shop.api.get(path, token="not-a-token")
    assert bad.status == 401
    query = await shop.get(path + "?x=1")
    assert query.status == 200
    assert shop.replays == []


async def test_replays_spend_the_budget_and_the_refusal_is_the_handlers_429(shop: Shop) -> None:
    product = await create_product(shop.api, shop.admin)
    path = f"/api/v1/products/{product['id']}"
    answers = [await shop.get(path) for _ in range(9)]
    assert [a.status for a in answers] == [200] * 8 + [429]
    assert [int(a.headers["RateLimit-Remaining"]) for a in answers[:8]] == list(range(7, -1, -1))
    assert len(shop.replays) >= 6  # all but the first one or two were replays
    refused = answers[-1]
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["status"] == 429 and int(refused.headers["Retry-After"]) >= 1


async def test_replays_are_measured_logged_and_counted_as_views(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    product = await create_product(shop.api, shop.admin)
    path = f"/api/v1/products/{product['id']}"
    views: list[int] = []
    original = shop.ctx.record_product_view
    shop.ctx.record_product_view = views.append  # type: ignore[method-assign, assignment]
    before = metrics.HTTP.value(("GET", ROUTE, "200"))
    hits_before = _local_hits()
    try:
        with caplog.at_level("INFO", logger="storefront.access"):
            answers = [await shop.get(path, **{"X-Request-ID": f"req-{n}"}) for n in range(3)]
    finally:
        shop.ctx.record_product_view = original  # type: ignore[method-assign]
    assert 1 <= len(shop.replays) <= 2  # the first answer was the handler's
    assert [a.headers["X-Request-ID"] for a in answers] == ["req-0", "req-1", "req-2"]
    assert views == [product["id"]] * 3
    assert metrics.HTTP.value(("GET", ROUTE, "200")) == before + 3
    assert _local_hits() >= hits_before + 2
    lines = [r for r in caplog.records if r.name == "storefront.access"]
    assert [getattr(r, "request_id", None) for r in lines] == ["req-0", "req-1", "req-2"]
    assert all(
        getattr(r, "path", None) == path and getattr(r, "status", None) == 200 for r in lines
    )


def _local_hits() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "cache_lookups_total", {"namespace": "products", "result": "local_hit"}
    )
    return value or 0.0


class Terms:
    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.valid = True

    def expires_at(self, now: float) -> float:
        return now + self.max_age

    def still_valid(self) -> bool:
        return self.valid

    def count_hit(self) -> None:
        pass


def test_entries_expire_and_are_bounded() -> None:
    cache = ReplayCache(max_entries=2)
    terms = Terms(60.0)
    for n in range(3):
        cache.offer((f"/p/{n}", None), ROUTE, [("Date", "x"), ("Etag", '"1"')], b"{}", terms=terms)
    assert len(cache) == 2 and cache.get(("/p/0", None)) is None
    assert not cache.has_target("/p/0") and cache.has_target("/p/1")
    entry = cache.get(("/p/2", None))
    assert entry is not None and entry.headers == (("Etag", '"1"'),)  # per-request Date left out
    assert cache.get(("/p/2", 7)) is None  # another caller's key
    terms.valid = False
    assert cache.get(("/p/2", None)) is None and len(cache) == 1 and not cache.has_target("/p/2")
    cache.offer(("/p/9", None), ROUTE, [], b"{}", terms=Terms(0.0))
    assert cache.get(("/p/9", None)) is None


async def test_an_offer_stands_until_its_terms_expire() -> None:
    cache = ReplayCache()
    terms = Terms(60.0)
    terms.expires_at = lambda now: now + 0.05  # type: ignore[method-assign]  # a local copy's end
    cache.offer(("/p/1", None), ROUTE, [], b"{}", terms=terms)
    assert cache.get(("/p/1", None)) is not None
    await asyncio.sleep(0.1)
    assert cache.get(("/p/1", None)) is None


async def test_me_is_replayed_to_its_own_user_only(shop: Shop) -> None:
    users = UserFactory(shop.ctx)
    alice, alice_token = await users.create()
    bob, bob_token = await users.create()
    # With Redis the users version is known once a read has fetched it: the third is a replay.
    answers = [await shop.api.get("/api/v1/auth/me", token=alice_token) for _ in range(3)]
    first, last = answers[0], answers[-1]
    assert shop.callers and set(shop.callers) == {alice.id}
    assert {a.json()["email"] for a in answers} == {alice.email}
    assert _comparable(last) == _comparable(first)
    spent = int(first.headers["RateLimit-Remaining"]) - int(last.headers["RateLimit-Remaining"])
    assert spent == 2
    # Another user, a forged token for alice's id and no token at all never get alice's answer.
    assert (await shop.api.get("/api/v1/auth/me", token=bob_token)).json()["email"] == bob.email
    forged = alice_token[: alice_token.rindex(".") + 1] + "A" * 43
    assert (await shop.api.get("/api/v1/auth/me", token=forged)).status == 401
    assert (await shop.get("/api/v1/auth/me")).status == 401
    assert set(shop.callers) == {alice.id}
    assert (await shop.api.get("/api/v1/auth/me", token=bob_token)).json()["email"] == bob.email
    assert shop.callers[-1] == bob.id


async def test_an_account_change_retires_the_replayed_me(shop: Shop) -> None:
    user, token = await UserFactory(shop.ctx).create()
    for _ in range(3):
        assert (await shop.api.get("/api/v1/auth/me", token=token)).json()["name"] == user.name
    assert shop.callers and set(shop.callers) == {user.id}
    await shop.ctx.pool.execute("UPDATE users SET name = 'Renamed' WHERE id = $1", user.id)
    await accounts.accounts_changed(shop.ctx)
    assert (await shop.api.get("/api/v1/auth/me", token=token)).json()["name"] == "Renamed"


async def test_a_request_without_host_still_meets_tornados_400(shop: Shop) -> None:
    product = await create_product(shop.api, shop.admin)
    path = f"/api/v1/products/{product['id']}"
    for _ in range(2):
        assert (await shop.get(path)).status == 200  # offered, then replayed
    port = int(shop.api.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nX-Forwarded-For: {shop.client}\r\n\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 400"), status_line


async def test_pipelined_replays_come_back_in_order(shop: Shop) -> None:
    products = [await create_product(shop.api, shop.admin, price=100 + n) for n in range(3)]
    paths = [f"/api/v1/products/{p['id']}" for p in products]
    n = next(_clients)
    other = {"X-Forwarded-For": f"10.{n // 250}.{n % 250}.7"}  # another client's budget
    for path in paths:
        assert (await shop.api.get(path, headers=other)).status == 200  # offered
    port = int(shop.api.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    wanted = [paths[n % 3] for n in range(60)]
    head = f"Host: 127.0.0.1\r\nX-Forwarded-For: {shop.client}\r\n"
    writer.write("".join(f"GET {p} HTTP/1.1\r\n{head}\r\n" for p in wanted).encode())
    await writer.drain()
    prices = []
    for _ in wanted:
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 "), status
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        prices.append(orjson.loads(body)["price"] if status.startswith(b"HTTP/1.1 200") else None)
    writer.close()
    # 8 fit this address's budget, then the handler's 429s; every answer in request order.
    assert prices[:8] == [100 + n % 3 for n in range(8)]
    assert prices[8:] == [None] * 52
    assert len(shop.replays) >= 8  # the answers were replays, not handler runs


async def test_an_offer_keeps_neither_its_handler_nor_its_request_alive(shop: Shop) -> None:
    """Offers outlive their requests (up to 10 000 of them): one that held its handler kept
    ~45 objects alive for every garbage collection to walk, and full collections took
    hundreds of milliseconds once the replay cache filled."""
    products = [await create_product(shop.api, shop.admin) for _ in range(3)]
    responses = shop.gateway.app.settings["replayer"].responses
    for product in products:
        assert (await shop.get(f"/api/v1/products/{product['id']}")).status == 200
    assert all(responses.has_target(f"/api/v1/products/{p['id']}") for p in products)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, ProductHandler | HTTPServerRequest)]
    assert alive == []
