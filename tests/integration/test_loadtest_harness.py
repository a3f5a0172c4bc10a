"""The load-test harness measures like against like, and reads what the gateway really exposes.

- The FastAPI reference `make bench` compares against serves the gateway's own JSON for
  /products/{id} and /auth/me, with the same status codes for the same tokens.
- The metric names `make loadtest` reads exist on /metrics and move with traffic.
- The Locust file loads (with its gRPC stubs) and every budgeted request name is one it sends.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import orjson
import pytest
import pytest_asyncio

from loadtests import harness, run_loadtest
from loadtests.harness import Reply, Service
from loadtests.scrape import Scrape
from server.context import AppContext
from server.db.seed import seed_catalog
from server.runtime import Addresses
from tests.conftest import ApiClient

API = "/api/v1"


@dataclass
class Pair:
    """The gateway and the reference serving the same captured data."""

    gateway_url: str
    reference: Service
    product_id: int
    access: str
    refresh: str
    issuer: str

    def both(self, path: str, token: str | None = None) -> tuple[Reply, Reply]:
        return (
            harness.request("GET", self.gateway_url + path, token=token),
            harness.request("GET", self.reference.base_url + path, token=token),
        )


@pytest_asyncio.fixture(scope="module")
async def pair(
    ctx: AppContext, gateway: Addresses, api: ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pair]:
    await seed_catalog(ctx.pool, 3, 1)
    product_id = await ctx.pool.fetchval("SELECT min(id) FROM products WHERE sku LIKE 'SEED-%'")
    email = f"harness-{time.monotonic_ns()}@example.com"
    registered = await api.post(
        f"{API}/auth/register", json={"email": email, "password": "harness-password-1"}
    )
    assert registered.status == 201, registered
    tokens = registered.json()
    gateway_url = f"http://127.0.0.1:{gateway.http_port}"
    fixtures = tmp_path_factory.mktemp("reference") / "fixtures.json"
    settings = ctx.settings
    # Blocking clients in threads: the gateway answers on this very loop.
    await asyncio.to_thread(
        harness.capture_fixtures,
        gateway_url,
        tokens["access"],
        product_id,
        settings.jwt_secret,
        fixtures,
        jwt_issuer=settings.jwt_issuer,
    )
    reference = await asyncio.to_thread(harness.start_reference, fixtures, log_path=None)
    try:
        yield Pair(
            gateway_url,
            reference,
            product_id,
            tokens["access"],
            tokens["refresh"],
            settings.jwt_issuer,
        )
    finally:
        await asyncio.to_thread(reference.stop)


async def test_reference_serves_the_gateways_product_json_with_its_cache_headers(
    pair: Pair,
) -> None:
    gateway, reference = await asyncio.to_thread(pair.both, f"{API}/products/{pair.product_id}")
    assert gateway.status == reference.status == 200
    assert reference.json() == gateway.json()
    assert set(gateway.json()) == {
        "id",
        "sku",
        "name",
        "description",
        "category_id",
        "price",
        "currency",
        "stock",
        "is_active",
        "created_at",
        "updated_at",
        "options",
        "variants",
    }
    for reply in (gateway, reference):
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.headers["cache-control"] == "public, max-age=60"
        assert reply.headers["etag"]


async def test_reference_answers_me_like_the_gateway_for_the_same_token(pair: Pair) -> None:
    gateway, reference = await asyncio.to_thread(pair.both, f"{API}/auth/me", pair.access)
    assert gateway.status == reference.status == 200
    assert reference.json() == gateway.json()
    assert set(gateway.json()) == {"id", "email", "name", "role", "created_at"}


@pytest.mark.parametrize("token", ["none", "refresh", "foreign", "garbage"])
async def test_reference_refuses_the_tokens_the_gateway_refuses(pair: Pair, token: str) -> None:
    claims = jwt.decode(pair.access, options={"verify_signature": False})
    bad = {
        "none": None,
        "refresh": pair.refresh,
        "garbage": "not-a-jwt",
        "foreign": jwt.encode(claims, "another-secret-0123456789-0123456789", "HS256"),
    }[token]
    gateway, reference = await asyncio.to_thread(pair.both, f"{API}/auth/me", bad)
    assert gateway.status == reference.status == 401


async def test_reference_and_gateway_both_404_an_unknown_product(pair: Pair) -> None:
    gateway, reference = await asyncio.to_thread(pair.both, f"{API}/products/999999999")
    assert gateway.status == reference.status == 404


async def test_the_metrics_the_load_test_reads_exist_and_count_requests(pair: Pair) -> None:
    def scrape() -> Scrape:
        reply = harness.request("GET", pair.gateway_url + "/metrics")
        assert reply.status == 200
        return Scrape.parse(reply.body.decode())

    def traffic() -> None:
        for _ in range(5):
            assert (
                harness.request("GET", f"{pair.gateway_url}{API}/products/{pair.product_id}").status
                == 200
            )

    before = await asyncio.to_thread(scrape)
    await asyncio.to_thread(traffic)
    delta = (await asyncio.to_thread(scrape)).minus(before)

    routes = delta.histogram("http_request_duration_seconds", ("method", "route"))
    product_routes = [
        h
        for (method, route), h in routes.items()
        if method == "GET" and route.startswith(f"{API}/products/{{")
    ]
    assert [h.count for h in product_routes] == [5]
    assert 0 < product_routes[0].quantile(0.95) < 10
    lookups = delta.total("cache_lookups_total")
    assert lookups >= 5
    assert delta.total("cache_lookups_total", lambda labels: "hit" in labels.get("result", "")) >= 4
    names = {name for (name, _labels) in before.samples}
    assert {"db_query_duration_seconds_bucket", "ratelimit_decisions_total"} <= names


async def test_reference_lists_with_the_gateways_function_and_answers_alike(
    pair: Pair, ctx: AppContext, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The list-db cell: the reference (given a database) answers a list from the gateway's
    own list function, so with the same bytes."""
    fixtures = tmp_path_factory.mktemp("reference-lists") / "fixtures.json"
    await asyncio.to_thread(
        harness.capture_fixtures,
        pair.gateway_url,
        pair.access,
        pair.product_id,
        ctx.settings.jwt_secret,
        fixtures,
        jwt_issuer=ctx.settings.jwt_issuer,
    )
    reference = await asyncio.to_thread(
        harness.start_reference, fixtures, log_path=None, database_url=ctx.settings.database_url
    )
    try:
        for query in ("sort=price&limit=5", "category=category-1&sort=price&min_price=1"):
            path = f"{API}/products?{query}"
            gateway, answer = await asyncio.to_thread(
                lambda p=path: (
                    harness.request("GET", pair.gateway_url + p),
                    harness.request("GET", reference.base_url + p),
                )
            )
            assert gateway.status == answer.status == 200, query
            assert answer.body == gateway.body and gateway.json()["items"], query
    finally:
        await asyncio.to_thread(reference.stop)


def test_list_items_are_judged_apart_from_the_cache_hit_rates() -> None:
    """A list page's item reads (namespace label `list-items`) would swamp the budgeted hit
    rates (twenty per list read); they have a budget of their own."""
    scrape = Scrape.parse(
        "\n".join(
            f'cache_lookups_total{{namespace="{namespace}",result="{result}"}} {value}'
            for namespace, result, value in (
                ("products", "local_hit", 9),
                ("products", "miss", 1),
                ("list-items", "redis_hit", 50),
                ("list-items", "miss", 50),
            )
        )
        + "\n"
    )
    targets = tomllib.loads((harness.LOADTESTS / "targets.toml").read_text())
    verdicts = {
        v.what.split(" (")[0]: (v.measured, v.met)
        for v in run_loadtest._judge_cache(
            targets, browse_cold=scrape, browse_warm=scrape, mixed=scrape
        )
    }
    assert verdicts == {
        "cache hit rate, browse mix": ("90.0%", False),
        "cache hit rate, full mix": ("90.0%", True),
        "cache hit rate, list items, full mix": ("50.0%", False),
    }


def test_the_wrk_report_line_is_read_into_rates_and_percentiles() -> None:
    line = (
        'WRK_JSON {"requests":5000,"duration_us":2000000,"bytes":1,"connect_errors":0,'
        '"read_errors":0,"write_errors":0,"status_errors":3,"timeouts":0,"p50_us":1500.0,'
        '"p90_us":2500.0,"p99_us":4000.0,"mean_us":1600.0,"max_us":9000.0}'
    )
    result = harness.parse_wrk("Running 2s test\n" + line + "\n")
    assert (result.rps, result.p50_ms, result.p99_ms) == (2500.0, 1.5, 4.0)
    assert result.status_errors == 3 and not result.clean
    lua = (harness.LOADTESTS / "wrk" / "report.lua").read_text()
    assert all(
        f'"{key}"' in lua
        for key in ("requests", "duration_us", "status_errors", "p50_us", "p99_us")
    )


def test_locustfile_loads_its_user_classes_and_sends_every_budgeted_request() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(harness.LOADTESTS / "locustfile.py"), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=harness.REPO,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert set(listed.stdout.split()) >= {"Browser", "Shopper", "Admin", "GrpcBrowser"}
    targets = tomllib.loads((harness.LOADTESTS / "targets.toml").read_text())
    source = Path(harness.LOADTESTS / "locustfile.py").read_text()
    sent = (
        set(re.findall(r'name="([^"]+)"', source))
        | set(re.findall(r'"(\w+Service/\w+)"', source))
        # names kept in constants: the live stream's opening and its event rows
        | set(re.findall(r'"(GET /api/v1/stream|stream: \w+ event)"', source))
    )
    assert set(targets["requests"]) <= sent


async def test_the_checkout_load_generator_places_real_orders(
    pair: Pair, ctx: AppContext, tmp_path: Path
) -> None:
    """The checkout cell's driver (loadtests/checkout_load.py): each cycle adds a line and checks
    out, every order is real, and its report line reads into a result."""
    user_id = int(jwt.decode(pair.access, options={"verify_signature": False})["sub"])
    await ctx.pool.execute(
        "UPDATE product_variants SET stock = 1000000 WHERE product_id = $1", pair.product_id
    )
    before = await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user_id)
    users = tmp_path / "users.json"
    users.write_bytes(orjson.dumps([{"token": pair.access, "product_id": pair.product_id}]))
    result = await asyncio.to_thread(harness.run_checkout, pair.gateway_url, users, seconds=1.0)
    placed = await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user_id)
    assert result.clean and result.requests >= 1
    assert placed - before == result.requests
    assert 0 < result.p50_ms <= result.p99_ms
    assert (
        await ctx.pool.fetchval("SELECT count(*) FROM cart_items WHERE user_id = $1", user_id) == 0
    )  # a worker stops between cycles: no cart is left half done


BURN_IN_A_CHILD = """
import os, time
if os.fork() == 0:
    start = time.process_time()
    while time.process_time() - start < 0.4:
        pass
    time.sleep(30)
    os._exit(0)
time.sleep(30)
"""


def test_a_process_trees_cpu_time_counts_its_forked_children() -> None:
    """bench_workers charges `serve --workers 2` with its forked workers' CPU, not the parent's."""
    parent = subprocess.Popen([sys.executable, "-c", BURN_IN_A_CHILD], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while harness.tree_cpu_seconds(parent.pid) < 0.35 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert harness.tree_cpu_seconds(parent.pid) >= 0.35
        assert harness.cpu_seconds(parent.pid) < 0.3  # the parent alone only slept
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(5)
