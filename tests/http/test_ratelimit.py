"""REST rate limits on one gateway (in-process budgets): headers, 429, login, trusted proxies."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio

from server.context import AppContext
from tests.conftest import ApiClient, Response, UserFactory, running_gateway

ME = "/api/v1/auth/me"
LOGIN = "/api/v1/auth/login"
_hosts = itertools.count(1)


def new_ip() -> str:
    n = next(_hosts)
    return f"198.51.{n // 250}.{n % 250 + 1}"


def via(ip: str) -> dict[str, str]:
    """Headers of a request our trusted proxy (127.0.0.1) forwards for `ip`."""
    return {"X-Forwarded-For": ip}


@dataclass
class Gateway:
    api: ApiClient
    ctx: AppContext
    users: UserFactory


async def running(database_url: str, http_impl: str, **env: str) -> AsyncIterator[Gateway]:
    async with running_gateway(database_url, http_impl, **env) as (api, ctx):
        yield Gateway(api, ctx, UserFactory(ctx))


@pytest_asyncio.fixture(scope="module")
async def limited(database_url: str, http_impl: str) -> AsyncIterator[Gateway]:
    async for gateway in running(
        database_url,
        http_impl,
        RATE_LIMIT_ANON="6/minute",
        RATE_LIMIT_USER="5/minute",
        RATE_LIMIT_LOGIN="2/minute",
        TRUSTED_PROXIES="127.0.0.1/32",
    ):
        yield gateway


@pytest_asyncio.fixture(scope="module")
async def untrusting(database_url: str, http_impl: str) -> AsyncIterator[Gateway]:
    async for gateway in running(database_url, http_impl, RATE_LIMIT_ANON="2/minute"):
        yield gateway


def budget(response: Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["RateLimit-Limit"]), int(h["RateLimit-Remaining"]), int(h["RateLimit-Reset"])


def assert_429(response: Response) -> None:
    assert response.status == 429, response
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 429
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert budget(response)[1] == 0


async def test_anonymous_budget_counts_down_then_429(limited: Gateway) -> None:
    ip = new_ip()
    seen = []
    for _ in range(6):
        response = await limited.api.get(ME, headers=via(ip))
        assert response.status == 401  # anonymous, but still budgeted and told so
        seen.append(budget(response))
    assert [remaining for _, remaining, _ in seen] == [5, 4, 3, 2, 1, 0]
    assert all(limit == 6 and 0 < reset <= 60 for limit, _, reset in seen)

    assert_429(await limited.api.get(ME, headers=via(ip)))
    assert (await limited.api.get(ME, headers=via(new_ip()))).status == 401  # others unaffected


async def test_user_budget_is_per_user_not_per_ip(limited: Gateway) -> None:
    ip = new_ip()
    _, alice = await limited.users.create()
    _, bob = await limited.users.create()
    for remaining in (4, 3, 2, 1, 0):
        response = await limited.api.get(ME, token=alice, headers=via(ip))
        assert response.status == 200 and budget(response)[:2] == (5, remaining)

    assert_429(await limited.api.get(ME, token=alice, headers=via(new_ip())))
    assert (await limited.api.get(ME, token=bob, headers=via(ip))).status == 200
    anonymous = await limited.api.get(ME, headers=via(ip))
    assert budget(anonymous)[:2] == (6, 5)  # the user's calls did not spend the IP's budget


async def test_login_budget_is_per_ip_and_email_even_for_the_right_password(
    limited: Gateway,
) -> None:
    user, _ = await limited.users.create(password="correct horse battery")
    ip = new_ip()
    body = {"email": user.email, "password": "correct horse battery"}
    for remaining in (1, 0):
        response = await limited.api.post(LOGIN, json=body, headers=via(ip))
        assert response.status == 200 and budget(response)[:2] == (2, remaining)

    assert_429(await limited.api.post(LOGIN, json=body, headers=via(ip)))
    other_email = {"email": f"x-{uuid.uuid4().hex}@example.com", "password": "wrong password"}
    assert (await limited.api.post(LOGIN, json=other_email, headers=via(ip))).status == 401
    assert (await limited.api.post(LOGIN, json=body, headers=via(new_ip()))).status == 200


async def test_a_token_does_not_lift_the_ip_budget_of_sign_ups_and_sign_ins(
    limited: Gateway,
) -> None:
    """Register, login and refresh spend the client IP's budget whatever token comes along:
    otherwise one valid token buys unlimited sign-ups and password guesses from one address."""
    ip = new_ip()
    _, token = await limited.users.create()
    answers = []
    for n in range(7):
        guess = {"email": f"spray-{n}-{uuid.uuid4().hex[:6]}@example.com", "password": "guess"}
        answers.append(await limited.api.post(LOGIN, json=guess, token=token, headers=via(ip)))
    assert [r.status for r in answers[:6]] == [401] * 6
    assert_429(answers[6])
    sign_up = {"email": f"new-{uuid.uuid4().hex}@example.com", "password": "correct horse battery"}
    assert_429(
        await limited.api.post("/api/v1/auth/register", json=sign_up, token=token, headers=via(ip))
    )
    assert (await limited.api.get(ME, token=token, headers=via(ip))).status == 200  # own budget


async def test_the_rightmost_untrusted_forwarded_hop_is_the_client(limited: Gateway) -> None:
    client = new_ip()
    for _ in range(6):
        await limited.api.get(ME, headers={"X-Forwarded-For": f"{new_ip()}, {client}"})
    # Whatever the client writes to the left, its budget is the one of the hop our proxy saw.
    spoofed = await limited.api.get(ME, headers={"X-Forwarded-For": f"{new_ip()}, {client}"})
    assert_429(spoofed)
    # Trusted hops (127.0.0.1) on the right are skipped.
    behind_two_proxies = await limited.api.get(
        ME, headers={"X-Forwarded-For": f"{client}, 127.0.0.1"}
    )
    assert_429(behind_two_proxies)
    garbage = await limited.api.get(ME, headers={"X-Forwarded-For": f"{client}, not-an-ip"})
    assert garbage.status == 401  # an unparseable hop is ignored: the proxy's own budget


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(untrusting: Gateway) -> None:
    statuses = [(await untrusting.api.get(ME, headers=via(new_ip()))).status for _ in range(3)]
    assert statuses == [401, 401, 429]


async def test_probes_are_not_budgeted(limited: Gateway) -> None:
    ip = new_ip()
    for _ in range(10):
        response = await limited.api.get("/healthz", headers=via(ip))
        assert response.status == 200 and "RateLimit-Limit" not in response.headers


async def test_a_forged_token_is_charged_to_its_ip(limited: Gateway) -> None:
    ip = new_ip()
    for _ in range(6):
        response = await limited.api.get(ME, token="forged.token.here", headers=via(ip))
        assert response.status == 401
    assert_429(await limited.api.get(ME, token="forged.token.here", headers=via(ip)))


async def test_rate_limiting_can_be_switched_off(database_url: str, http_impl: str) -> None:
    async for gateway in running(
        database_url, http_impl, RATE_LIMIT_ENABLED="0", RATE_LIMIT_ANON="1/hour"
    ):
        for _ in range(3):
            response = await gateway.api.get(ME)
            assert response.status == 401 and "RateLimit-Limit" not in response.headers
