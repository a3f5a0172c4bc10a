"""Outbound webhooks against a real local receiver: subscriptions (admin only), events written
with the change, signed deliveries, retries with backoff, disabling after failures in a row,
the delivery log and manual redelivery, and the refusals (500, timeout, redirect, untrusted
TLS, SSRF targets)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest

from server.context import AppContext
from server.domain.errors import ValidationFailed
from server.services.webhook_targets import PublicOnlyResolver, check_target, is_public
from tests.conftest import ApiClient, make_settings, running_gateway, wait_for
from tests.orders_support import Accounts, create_product, fill_cart
from tests.webhook_support import Receiver
from workers.broker import build_context_with_jobs
from workers.tasks.webhooks import RetryPolicy, deliver_due

HOOKS = "/api/v1/webhooks"


@pytest.fixture(scope="module")
async def receiver(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Receiver]:
    server = Receiver()
    server.start(tmp_path_factory.mktemp("tls"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def ctx(database_url: str) -> AsyncIterator[AppContext]:
    context = await build_context_with_jobs(
        make_settings(database_url, WEBHOOK_TIMEOUT="1", WEBHOOK_MAX_FAILURES="3")
    )
    yield context
    await context.close()


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


@pytest.fixture(scope="module")
async def admin(accounts: Accounts) -> str:
    return (await accounts.create("admin"))[1]


async def subscribe(
    api: ApiClient, admin: str, url: str, events: list[str], **body: Any
) -> dict[str, Any]:
    response = await api.post(HOOKS, json={"url": url, "events": events, **body}, token=admin)
    assert response.status == 201, response.json()
    return response.json()


async def place_order(api: ApiClient, ctx: AppContext, accounts: Accounts) -> dict[str, Any]:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=50)
    await fill_cart(ctx.pool, user.id, {product: 1})
    response = await api.post("/api/v1/orders", json={}, token=token)
    assert response.status == 201
    order: dict[str, Any] = response.json()
    order["_token"] = token
    return order


async def deliveries(api: ApiClient, admin: str, subscription: dict[str, Any]) -> list[Any]:
    page = await api.get(f"{HOOKS}/{subscription['id']}/deliveries", token=admin)
    assert page.status == 200
    items: list[Any] = page.json()["items"]
    return items


async def run_deliveries(ctx: AppContext, subscription: dict[str, Any], attempts: int = 1) -> None:
    """Run the delivery job (as the event's nudge or the schedule would; several runs at once
    share the rows) until every delivery of `subscription` has made `attempts` attempts."""

    async def settled() -> bool:
        await deliver_due(ctx.pool, ctx.settings)
        row = await ctx.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'sending' OR attempts < $2) AS busy,
                      count(*) AS total
                 FROM webhook_deliveries WHERE subscription_id = $1""",
            subscription["id"],
            attempts,
        )
        return bool(row["total"] and not row["busy"])

    await wait_for(settled, timeout=10, interval=0.05)


def verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """What a receiver does with Storefront-Signature."""
    parts = dict(p.split("=", 1) for p in headers["Storefront-Signature"].split(","))
    assert abs(time.time() - int(parts["t"])) < 60
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())


# ---- subscriptions --------------------------------------------------------------------------


async def test_subscriptions_are_for_admins_and_validated(
    api: ApiClient, admin: str, accounts: Accounts, receiver: Receiver
) -> None:
    _, customer = await accounts.create()
    body = {"url": receiver.url("/ok"), "events": ["order.created"]}
    assert (await api.post(HOOKS, json=body)).status == 401
    assert (await api.post(HOOKS, json=body, token=customer)).status == 403
    for bad in (
        {"url": receiver.url("/ok"), "events": ["order.exploded"]},
        {"url": receiver.url("/ok"), "events": []},
        {"url": "ftp://example.com/x", "events": ["order.paid"]},
        {"url": "http://user:pw@example.com/x", "events": ["order.paid"]},
        {"url": receiver.url("/ok"), "events": ["order.paid"], "secret": "short"},
    ):
        assert (await api.post(HOOKS, json=bad, token=admin)).status == 422, bad
    created = await subscribe(api, admin, receiver.url("/ok"), ["order.created"])
    assert created["secret"].startswith("whsec_") and created["is_active"] is True
    listed = (await api.get(HOOKS, token=admin)).json()["items"]
    assert created["id"] in [s["id"] for s in listed]
    assert (await api.delete(f"{HOOKS}/{created['id']}", token=admin)).status == 204
    assert (await api.get(f"{HOOKS}/{created['id']}", token=admin)).status == 404


# ---- deliveries -----------------------------------------------------------------------------


async def test_a_checkout_is_delivered_signed_to_its_subscribers_only(
    api: ApiClient, ctx: AppContext, admin: str, accounts: Accounts, receiver: Receiver
) -> None:
    wanted = await subscribe(
        api, admin, receiver.url("/ok"), ["order.created"], secret="s3cret-for-the-receiver"
    )
    other = await subscribe(api, admin, receiver.url("/ok"), ["refund.created"])
    before = len(receiver.at("/ok"))

    order = await place_order(api, ctx, accounts)
    await run_deliveries(ctx, wanted)

    got = [
        r
        for r in receiver.at("/ok")[before:]
        if orjson.loads(r.body)["data"].get("id") == order["id"]
    ]
    assert len(got) == 1
    delivery = got[0]
    verify("s3cret-for-the-receiver", delivery.headers, delivery.body)
    payload = orjson.loads(delivery.body)
    assert payload["type"] == "order.created" and delivery.headers["Storefront-Event"] == (
        "order.created"
    )
    assert payload["data"]["total"] == order["total"]
    assert delivery.headers["Storefront-Event-Id"] == str(payload["id"])
    log = await deliveries(api, admin, wanted)
    assert (log[0]["status"], log[0]["attempts"], log[0]["last_status_code"]) == (
        "succeeded",
        1,
        200,
    )
    assert await deliveries(api, admin, other) == []
    for sub in (wanted, other):
        await api.delete(f"{HOOKS}/{sub['id']}", token=admin)


async def test_a_refused_change_announces_nothing(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=0)
    await fill_cart(ctx.pool, user.id, {product: 1})
    before = await ctx.pool.fetchval("SELECT count(*) FROM events")
    assert (await api.post("/api/v1/orders", json={}, token=token)).status == 409
    assert await ctx.pool.fetchval("SELECT count(*) FROM events") == before


async def test_the_order_follows_its_payment_and_refund_in_events(
    api: ApiClient, ctx: AppContext, admin: str, accounts: Accounts, receiver: Receiver
) -> None:
    sub = await subscribe(api, admin, receiver.url("/ok"), ["order.paid", "refund.created"])
    order = await place_order(api, ctx, accounts)
    paid = await api.post(
        f"/api/v1/orders/{order['id']}/payments", json={"token": "tok_visa"}, token=order["_token"]
    )
    assert paid.status == 201
    refunded = await api.post(
        f"/api/v1/orders/{order['id']}/refunds", json={"amount": 10}, token=admin
    )
    assert refunded.status == 201
    await wait_for(lambda: _count(ctx, sub, 2))
    await run_deliveries(ctx, sub)
    log = await deliveries(api, admin, sub)
    assert sorted(d["event_type"] for d in log) == ["order.paid", "refund.created"]
    assert {d["status"] for d in log} == {"succeeded"}
    await api.delete(f"{HOOKS}/{sub['id']}", token=admin)


async def test_failures_back_off_then_disable_the_subscription(
    api: ApiClient, ctx: AppContext, admin: str, accounts: Accounts, receiver: Receiver
) -> None:
    sub = await subscribe(api, admin, receiver.url("/fail"), ["order.created"])
    await place_order(api, ctx, accounts)
    await run_deliveries(ctx, sub)

    first = (await deliveries(api, admin, sub))[0]
    assert (first["status"], first["attempts"], first["last_status_code"]) == ("pending", 1, 500)
    # 30 s after the first failure, with jitter x0.5-1.5.
    wait = _parse(first["next_attempt_at"]) - time.time()
    assert 10 < wait <= 45, wait

    # Two more failures in a row (the retry made due now) reach WEBHOOK_MAX_FAILURES = 3.
    for attempt in (2, 3):
        await ctx.pool.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE subscription_id = $1",
            sub["id"],
        )
        await run_deliveries(ctx, sub, attempt)
    current = (await api.get(f"{HOOKS}/{sub['id']}", token=admin)).json()
    assert current["is_active"] is False and current["consecutive_failures"] == 3
    assert current["disabled_at"] is not None
    # A disabled subscription gets nothing, not even its due retries.
    hits = len(receiver.at("/fail"))
    await ctx.pool.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE subscription_id = $1",
        sub["id"],
    )
    await deliver_due(ctx.pool, ctx.settings)
    assert len(receiver.at("/fail")) == hits
    assert (await deliveries(api, admin, sub))[0]["attempts"] == 3
    # Re-enabled, it starts counting again.
    enabled = await api.patch(f"{HOOKS}/{sub['id']}", json={"is_active": True}, token=admin)
    assert enabled.json()["is_active"] is True and enabled.json()["consecutive_failures"] == 0
    await api.delete(f"{HOOKS}/{sub['id']}", token=admin)


async def _count(ctx: AppContext, subscription: dict[str, Any], n: int) -> bool:
    found = await ctx.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = $1", subscription["id"]
    )
    return bool(found >= n)


def _parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@pytest.mark.parametrize(
    "path, tls, expected_error",
    [
        ("/slow", False, "Timeout"),  # past WEBHOOK_TIMEOUT = 1 s
        ("/redirect", False, "answered 302"),  # never followed
        ("/ok", True, "SSL"),  # a certificate nobody trusts
    ],
)
async def test_timeouts_redirects_and_untrusted_tls_are_failures(
    api: ApiClient,
    ctx: AppContext,
    admin: str,
    accounts: Accounts,
    receiver: Receiver,
    path: str,
    tls: bool,
    expected_error: str,
) -> None:
    url = receiver.tls_url(path) if tls else receiver.url(path)
    sub = await subscribe(api, admin, url, ["order.created"])
    order = await place_order(api, ctx, accounts)
    await run_deliveries(ctx, sub)
    log = await deliveries(api, admin, sub)
    assert log[0]["status"] == "pending" and log[0]["attempts"] == 1
    assert expected_error in (log[0]["last_error"] or ""), log[0]
    # Nothing reached the redirect's target, nor the TLS server's handler.
    assert not [
        r for r in receiver.at("/ok") if orjson.loads(r.body)["data"].get("id") == order["id"]
    ]
    await api.delete(f"{HOOKS}/{sub['id']}", token=admin)


async def test_a_dead_delivery_can_be_delivered_again(
    api: ApiClient, ctx: AppContext, admin: str, accounts: Accounts, receiver: Receiver
) -> None:
    sub = await subscribe(api, admin, receiver.url("/fail"), ["order.created"])
    await place_order(api, ctx, accounts)
    await run_deliveries(ctx, sub)  # the first attempt fails
    await ctx.pool.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE subscription_id = $1",
        sub["id"],
    )
    await deliver_due(ctx.pool, ctx.settings, RetryPolicy(max_attempts=2))  # the last one
    dead = (await deliveries(api, admin, sub))[0]
    assert dead["status"] == "dead"
    # The receiver is fixed (the subscription now points at a working URL).
    await api.patch(f"{HOOKS}/{sub['id']}", json={"url": receiver.url("/ok")}, token=admin)

    again = await api.post(
        f"{HOOKS}/{sub['id']}/deliveries/{dead['id']}/redeliver", json={}, token=admin
    )

    assert again.status == 202 and again.json()["status"] == "pending"
    await run_deliveries(ctx, sub)
    settled = (await deliveries(api, admin, sub))[0]
    assert (settled["id"], settled["status"]) == (dead["id"], "succeeded")
    wrong = await api.post(f"{HOOKS}/{sub['id']}/deliveries/999999/redeliver", token=admin)
    assert wrong.status == 404
    await api.delete(f"{HOOKS}/{sub['id']}", token=admin)


async def test_the_event_nudges_the_delivery_job_without_waiting_for_its_schedule(
    api: ApiClient, ctx: AppContext, admin: str, accounts: Accounts, receiver: Receiver
) -> None:
    sub = await subscribe(api, admin, receiver.url("/ok"), ["order.created"])
    order = await place_order(api, ctx, accounts)

    async def arrived() -> bool:
        return any(
            orjson.loads(r.body)["data"].get("id") == order["id"] for r in receiver.at("/ok")
        )

    await wait_for(arrived, timeout=10)
    await api.delete(f"{HOOKS}/{sub['id']}", token=admin)


# ---- SSRF guard -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_targets_are_refused_where_they_are_not_allowed(url: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await check_target(url, allow_private=False, require_https=False)
    assert refused.value.errors[0].field == "url"
    assert await check_target(url, allow_private=True, require_https=False) == url


async def test_production_needs_https() -> None:
    with pytest.raises(ValidationFailed):
        await check_target("http://203.0.113.9/hook", allow_private=False, require_https=True)


def test_only_public_addresses_are_public() -> None:
    assert is_public(ipaddress.ip_address("8.8.8.8"))
    assert is_public(ipaddress.ip_address("2606:4700:4700::1111"))
    for address in ("127.0.0.1", "10.1.1.1", "172.16.0.1", "169.254.1.1", "::1", "fc00::1"):
        assert not is_public(ipaddress.ip_address(address)), address


async def test_the_delivery_resolver_refuses_a_name_that_resolves_privately() -> None:
    with pytest.raises(OSError):
        await PublicOnlyResolver().resolve("localhost", 80)


async def test_a_gateway_that_allows_no_private_target_refuses_the_subscription(
    database_url: str, receiver: Receiver, accounts: Accounts
) -> None:
    async with running_gateway(database_url, WEBHOOK_ALLOW_PRIVATE="0") as (api, other):
        token = Accounts(other)
        _, admin = await token.create("admin")
        refused = await api.post(
            HOOKS, json={"url": receiver.url("/ok"), "events": ["order.paid"]}, token=admin
        )
        assert refused.status == 422 and refused.json()["errors"][0]["field"] == "url"
