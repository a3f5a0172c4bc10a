"""CORS for the configured browser origins: preflights, response headers, and `Vary: Origin`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.conftest import ApiClient, make_settings, start_gateway
from workers.broker import build_context_with_jobs

SHOP = "https://shop.example"
PREFLIGHT = {
    "Origin": SHOP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest_asyncio.fixture(scope="module")
async def cors_api(database_url: str, http_impl: str) -> AsyncIterator[ApiClient]:
    ctx = await build_context_with_jobs(
        make_settings(
            database_url, CORS_ORIGINS=f"{SHOP},https://admin.example", RATE_LIMIT_ANON="2/minute"
        )
    )
    gw, addresses = await start_gateway(ctx, http_impl)
    api = ApiClient(f"http://127.0.0.1:{addresses.http_port}")
    yield api
    api.close()
    await gw.stop_servers(1.0)
    await ctx.close()


async def test_a_preflight_from_an_allowed_origin_is_answered(cors_api: ApiClient) -> None:
    response = await cors_api.request("OPTIONS", "/api/v1/auth/login", headers=PREFLIGHT)

    assert response.status == 204 and response.body == b""
    h = response.headers
    assert h["Access-Control-Allow-Origin"] == SHOP
    assert "POST" in h["Access-Control-Allow-Methods"]
    allowed = {v.strip().lower() for v in h["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
    assert int(h["Access-Control-Max-Age"]) > 0
    assert "Origin" in h["Vary"]
    assert "Access-Control-Allow-Credentials" not in h


async def test_preflights_are_not_budgeted(cors_api: ApiClient) -> None:
    for _ in range(5):
        response = await cors_api.request("OPTIONS", "/api/v1/auth/me", headers=PREFLIGHT)
        assert response.status == 204


async def test_a_preflight_from_another_origin_gets_no_cors_headers(cors_api: ApiClient) -> None:
    headers = {**PREFLIGHT, "Origin": "https://evil.example"}
    response = await cors_api.request("OPTIONS", "/api/v1/auth/login", headers=headers)
    assert response.status == 405
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]


async def test_actual_responses_carry_cors_headers_even_on_errors(cors_api: ApiClient) -> None:
    response = await cors_api.get("/api/v1/auth/me", headers={"Origin": SHOP})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "RateLimit-Remaining" in exposed and "Retry-After" in exposed
    assert "Origin" in response.headers["Vary"]


async def test_responses_to_other_origins_say_vary_origin(cors_api: ApiClient) -> None:
    response = await cors_api.get("/api/v1/auth/me", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]
