"""storefront.v1.WebhookService over a real gRPC channel: the same rules as REST /webhooks (admin
only, the SSRF guard, the delivery log and redelivery), deliveries made to a real local
receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.context import AppContext
from server.rpc.pb.storefront.v1 import (
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from tests.conftest import ApiClient, make_settings, start_gateway, wait_for
from tests.orders_support import Accounts, create_product
from tests.webhook_support import Receiver
from workers.broker import build_context_with_jobs
from workers.tasks.webhooks import deliver_due

Metadata = tuple[tuple[str, str], ...]
Stub = webhooks_pb2_grpc.WebhookServiceStub


@pytest.fixture(scope="module")
async def receiver(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Receiver]:
    server = Receiver()
    server.start(tmp_path_factory.mktemp("tls"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


@pytest.fixture(scope="module")
async def admin(accounts: Accounts) -> Metadata:
    return auth((await accounts.create("admin"))[1])


@pytest.fixture(scope="module")
def hooks(grpc_channel: grpc.aio.Channel) -> Stub:
    return webhooks_pb2_grpc.WebhookServiceStub(grpc_channel)


@pytest.fixture(scope="module")
def orders(grpc_channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceStub:
    return orders_pb2_grpc.OrderServiceStub(grpc_channel)


def auth(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value


async def subscribe(
    hooks: Stub, admin: Metadata, url: str, events: list[str], **fields: Any
) -> webhooks_pb2.Subscription:
    request = webhooks_pb2.CreateSubscriptionRequest(url=url, events=events, **fields)
    subscription: webhooks_pb2.Subscription = await hooks.CreateSubscription(
        request, metadata=admin
    )
    return subscription


async def unsubscribe(
    hooks: Stub, admin: Metadata, subscription: webhooks_pb2.Subscription
) -> None:
    await hooks.DeleteSubscription(
        webhooks_pb2.DeleteSubscriptionRequest(id=subscription.id), metadata=admin
    )


async def place_order(
    orders: orders_pb2_grpc.OrderServiceStub, ctx: AppContext, accounts: Accounts
) -> orders_pb2.Order:
    _, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    order: orders_pb2.Order = await orders.CreateOrder(
        orders_pb2.CreateOrderRequest(items=[common_pb2.CartItem(product_id=product, quantity=1)]),
        metadata=auth(token),
    )
    return order


async def run_deliveries(ctx: AppContext, subscription_id: int, count: int) -> None:
    """Run the delivery job (the event's nudge may run it too; they share the rows) until the
    subscription's `count` deliveries have each been attempted and none is in flight."""

    async def settled() -> bool:
        await deliver_due(ctx.pool, ctx.settings)
        row = await ctx.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE status IN ('pending', 'sending')) AS busy,
                      count(*) AS total
                 FROM webhook_deliveries WHERE subscription_id = $1""",
            subscription_id,
        )
        return bool(row["total"] == count and not row["busy"])

    await wait_for(settled, timeout=10, interval=0.05)


async def deliveries(
    hooks: Stub, admin: Metadata, subscription_id: int, limit: int = 0, cursor: str = ""
) -> webhooks_pb2.ListDeliveriesResponse:
    page: webhooks_pb2.ListDeliveriesResponse = await hooks.ListDeliveries(
        webhooks_pb2.ListDeliveriesRequest(
            subscription_id=subscription_id,
            page=common_pb2.PageRequest(limit=limit, cursor=cursor),
        ),
        metadata=admin,
    )
    return page


@asynccontextmanager
async def other_gateway(database_url: str, **env: str) -> AsyncIterator[tuple[Stub, AppContext]]:
    """A gateway process of its own with these settings (the SSRF guard follows them)."""
    context = await build_context_with_jobs(make_settings(database_url, **env))
    gateway, addresses = await start_gateway(context)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{addresses.grpc_port}")
    try:
        yield webhooks_pb2_grpc.WebhookServiceStub(channel), context
    finally:
        await channel.close()
        await gateway.stop_servers(1.0)
        await context.close()


async def test_the_service_is_reported_by_health_and_reflection(
    grpc_channel: grpc.aio.Channel,
) -> None:
    name = webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name
    health = await health_pb2_grpc.HealthStub(grpc_channel).Check(
        health_pb2.HealthCheckRequest(service=name), timeout=5
    )
    names: list[str] = []
    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc_channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in reflection.ServerReflectionInfo(iter([request]), timeout=5):
        names.extend(s.name for s in response.list_services_response.service)

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert name == "storefront.v1.WebhookService" and name in names


# ---- subscriptions --------------------------------------------------------------------------


async def test_an_admin_creates_lists_gets_and_deletes_subscriptions(
    hooks: Stub, admin: Metadata, receiver: Receiver
) -> None:
    generated = await subscribe(
        hooks, admin, receiver.url("/ok"), ["order.created", "order.paid", "order.created"]
    )
    chosen = await subscribe(
        hooks, admin, receiver.url("/ok"), ["refund.created"], secret="a-secret-of-my-own"
    )

    assert generated.secret.startswith("whsec_") and len(generated.secret) > 30
    assert list(generated.events) == ["order.created", "order.paid"]  # a repeat counts once
    assert generated.is_active and generated.consecutive_failures == 0
    assert not generated.HasField("disabled_at") and generated.HasField("created_at")
    assert chosen.secret == "a-secret-of-my-own"
    listed = await hooks.ListSubscriptions(webhooks_pb2.ListSubscriptionsRequest(), metadata=admin)
    assert [s.id for s in listed.items if s.id in (generated.id, chosen.id)] == [
        generated.id,
        chosen.id,
    ]
    got = await hooks.GetSubscription(
        webhooks_pb2.GetSubscriptionRequest(id=generated.id), metadata=admin
    )
    assert got == generated

    await unsubscribe(hooks, admin, generated)

    gone = await rpc_error(
        hooks.GetSubscription(webhooks_pb2.GetSubscriptionRequest(id=generated.id), metadata=admin)
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    again = await rpc_error(
        hooks.DeleteSubscription(
            webhooks_pb2.DeleteSubscriptionRequest(id=generated.id), metadata=admin
        )
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND
    listed = await hooks.ListSubscriptions(webhooks_pb2.ListSubscriptionsRequest(), metadata=admin)
    assert generated.id not in [s.id for s in listed.items]
    await unsubscribe(hooks, admin, chosen)


async def test_an_update_changes_only_the_fields_it_sets(
    hooks: Stub, admin: Metadata, receiver: Receiver
) -> None:
    created = await subscribe(
        hooks, admin, receiver.url("/ok"), ["order.created"], secret="the-first-secret-123"
    )

    moved = await hooks.UpdateSubscription(
        webhooks_pb2.UpdateSubscriptionRequest(id=created.id, url=receiver.url("/elsewhere")),
        metadata=admin,
    )
    assert moved.url == receiver.url("/elsewhere")
    assert (list(moved.events), moved.secret, moved.is_active) == (
        ["order.created"],
        "the-first-secret-123",
        True,
    )
    retyped = await hooks.UpdateSubscription(
        webhooks_pb2.UpdateSubscriptionRequest(
            id=created.id,
            events=webhooks_pb2.EventTypes(types=["order.paid", "refund.created"]),
            secret="the-second-secret-45",
        ),
        metadata=admin,
    )
    assert list(retyped.events) == ["order.paid", "refund.created"]
    assert (retyped.url, retyped.secret) == (receiver.url("/elsewhere"), "the-second-secret-45")
    untouched = await hooks.UpdateSubscription(
        webhooks_pb2.UpdateSubscriptionRequest(id=created.id), metadata=admin
    )
    assert untouched == retyped
    unknown = await rpc_error(
        hooks.UpdateSubscription(
            webhooks_pb2.UpdateSubscriptionRequest(id=999_999, is_active=False), metadata=admin
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    await unsubscribe(hooks, admin, created)


async def test_a_disabled_subscription_is_re_enabled_with_a_fresh_count(
    hooks: Stub, admin: Metadata, receiver: Receiver, ctx: AppContext
) -> None:
    created = await subscribe(hooks, admin, receiver.url("/ok"), ["order.created"])

    paused = await hooks.UpdateSubscription(
        webhooks_pb2.UpdateSubscriptionRequest(id=created.id, is_active=False), metadata=admin
    )
    assert not paused.is_active
    # As the delivery job leaves it after WEBHOOK_MAX_FAILURES failures in a row.
    await ctx.pool.execute(
        """UPDATE webhook_subscriptions
              SET is_active = false, consecutive_failures = 10, disabled_at = now()
            WHERE id = $1""",
        created.id,
    )
    disabled = await hooks.GetSubscription(
        webhooks_pb2.GetSubscriptionRequest(id=created.id), metadata=admin
    )
    assert disabled.HasField("disabled_at") and disabled.consecutive_failures == 10

    enabled = await hooks.UpdateSubscription(
        webhooks_pb2.UpdateSubscriptionRequest(id=created.id, is_active=True), metadata=admin
    )

    assert enabled.is_active and enabled.consecutive_failures == 0
    assert not enabled.HasField("disabled_at")
    await unsubscribe(hooks, admin, created)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"events": ["order.exploded"]}, "events[0]"),
        ({"events": []}, "events"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://user:pw@example.com/x"}, "url"),
        ({"secret": "short"}, "secret"),
    ],
)
async def test_an_invalid_subscription_is_invalid_argument(
    hooks: Stub, admin: Metadata, receiver: Receiver, fields: dict[str, Any], field: str
) -> None:
    request = {"url": receiver.url("/ok"), "events": ["order.paid"], **fields}

    refused = await rpc_error(
        hooks.CreateSubscription(webhooks_pb2.CreateSubscriptionRequest(**request), metadata=admin)
    )

    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}:" in (refused.details() or ""), refused.details()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"events": webhooks_pb2.EventTypes(types=[])}, "events"),
        ({"events": webhooks_pb2.EventTypes(types=["stock.high"])}, "events[0]"),
        ({"url": "gopher://example.com/"}, "url"),
        ({"secret": "x" * 201}, "secret"),
    ],
)
async def test_an_invalid_update_is_invalid_argument_and_changes_nothing(
    hooks: Stub, admin: Metadata, receiver: Receiver, change: dict[str, Any], field: str
) -> None:
    created = await subscribe(hooks, admin, receiver.url("/ok"), ["order.paid"])

    refused = await rpc_error(
        hooks.UpdateSubscription(
            webhooks_pb2.UpdateSubscriptionRequest(id=created.id, **change), metadata=admin
        )
    )

    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}:" in (refused.details() or ""), refused.details()
    current = await hooks.GetSubscription(
        webhooks_pb2.GetSubscriptionRequest(id=created.id), metadata=admin
    )
    assert current == created
    await unsubscribe(hooks, admin, created)


_EVERY_METHOD: list[tuple[str, Any]] = [
    (
        "CreateSubscription",
        webhooks_pb2.CreateSubscriptionRequest(url="http://127.0.0.1/x", events=["order.paid"]),
    ),
    ("ListSubscriptions", webhooks_pb2.ListSubscriptionsRequest()),
    ("GetSubscription", webhooks_pb2.GetSubscriptionRequest(id=1)),
    ("UpdateSubscription", webhooks_pb2.UpdateSubscriptionRequest(id=1, is_active=False)),
    ("DeleteSubscription", webhooks_pb2.DeleteSubscriptionRequest(id=1)),
    ("ListDeliveries", webhooks_pb2.ListDeliveriesRequest(subscription_id=1)),
    ("Redeliver", webhooks_pb2.RedeliverRequest(subscription_id=1, delivery_id=1)),
]


@pytest.mark.parametrize(
    "method, request_message", _EVERY_METHOD, ids=[m for m, _ in _EVERY_METHOD]
)
async def test_only_admins_may_call_any_method(
    hooks: Stub, accounts: Accounts, ctx: AppContext, method: str, request_message: Any
) -> None:
    _, customer = await accounts.create()
    _, service = await accounts.create("service")
    before = await ctx.pool.fetchval("SELECT count(*) FROM webhook_subscriptions")
    call = getattr(hooks, method)

    anonymous = await rpc_error(call(request_message))
    as_customer = await rpc_error(call(request_message, metadata=auth(customer)))
    as_service = await rpc_error(call(request_message, metadata=auth(service)))

    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    assert as_customer.code() == grpc.StatusCode.PERMISSION_DENIED
    assert as_service.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await ctx.pool.fetchval("SELECT count(*) FROM webhook_subscriptions") == before


# ---- SSRF guard -----------------------------------------------------------------------------


async def test_a_gateway_that_allows_no_private_target_refuses_it(
    database_url: str, receiver: Receiver, accounts: Accounts
) -> None:
    admin = auth((await accounts.create("admin"))[1])
    async with other_gateway(database_url, WEBHOOK_ALLOW_PRIVATE="0") as (hooks, _):
        refused = await rpc_error(
            hooks.CreateSubscription(
                webhooks_pb2.CreateSubscriptionRequest(
                    url=receiver.url("/ok"), events=["order.paid"]
                ),
                metadata=admin,
            )
        )

    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "url:" in (refused.details() or "") and "private" in (refused.details() or "")


async def test_production_takes_only_https_to_public_addresses(
    database_url: str, accounts: Accounts
) -> None:
    admin = auth((await accounts.create("admin"))[1])
    async with other_gateway(database_url, STOREFRONT_ENV="production") as (production, _):
        codes = {}
        for url in (
            "http://8.8.8.8/hook",  # public, but not https
            "https://127.0.0.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:10.0.0.1]/hook",
        ):
            refused = await rpc_error(
                production.CreateSubscription(
                    webhooks_pb2.CreateSubscriptionRequest(url=url, events=["stock.low"]),
                    metadata=admin,
                )
            )
            codes[url] = refused.code()
        # An address literal: accepted without any DNS lookup; deleted before anything is sent.
        public = await subscribe(production, admin, "https://8.8.8.8/hook", ["stock.low"])
        moved = await rpc_error(
            production.UpdateSubscription(
                webhooks_pb2.UpdateSubscriptionRequest(id=public.id, url="https://10.1.2.3/"),
                metadata=admin,
            )
        )
        await unsubscribe(production, admin, public)

    assert set(codes.values()) == {grpc.StatusCode.INVALID_ARGUMENT}, codes
    assert moved.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert public.url == "https://8.8.8.8/hook"


# ---- deliveries -----------------------------------------------------------------------------


async def test_a_delivery_is_logged_and_can_be_delivered_again(
    hooks: Stub,
    admin: Metadata,
    orders: orders_pb2_grpc.OrderServiceStub,
    ctx: AppContext,
    accounts: Accounts,
    receiver: Receiver,
) -> None:
    sub = await subscribe(
        hooks, admin, receiver.url("/ok"), ["order.created"], secret="secret-of-the-receiver"
    )
    order = await place_order(orders, ctx, accounts)
    await run_deliveries(ctx, sub.id, 1)

    log = await deliveries(hooks, admin, sub.id)
    assert len(log.items) == 1 and log.next_cursor == ""
    first = log.items[0]
    assert (first.status, first.attempts, first.last_status_code, first.event_type) == (
        webhooks_pb2.DELIVERY_STATUS_SUCCEEDED,
        1,
        200,
        "order.created",
    )
    assert first.HasField("delivered_at") and not first.HasField("last_error")
    sent = _sent_to(receiver, first.id)
    assert len(sent) == 1 and orjson.loads(sent[0].body)["data"]["id"] == order.id
    _verify("secret-of-the-receiver", sent[0].headers, sent[0].body)

    again = await hooks.Redeliver(
        webhooks_pb2.RedeliverRequest(subscription_id=sub.id, delivery_id=first.id),
        metadata=admin,
    )

    assert (again.id, again.status, again.attempts) == (
        first.id,
        webhooks_pb2.DELIVERY_STATUS_PENDING,
        0,
    )
    await run_deliveries(ctx, sub.id, 1)
    settled = (await deliveries(hooks, admin, sub.id)).items
    assert [(d.id, d.status, d.attempts) for d in settled] == [
        (first.id, webhooks_pb2.DELIVERY_STATUS_SUCCEEDED, 1)
    ]
    resent = _sent_to(receiver, first.id)
    assert len(resent) == 2
    assert resent[1].headers["Storefront-Event-Id"] == resent[0].headers["Storefront-Event-Id"]

    other = await subscribe(hooks, admin, receiver.url("/ok"), ["refund.created"])
    for subscription_id, delivery_id in ((sub.id, 999_999), (other.id, first.id)):
        missing = await rpc_error(
            hooks.Redeliver(
                webhooks_pb2.RedeliverRequest(
                    subscription_id=subscription_id, delivery_id=delivery_id
                ),
                metadata=admin,
            )
        )
        assert missing.code() == grpc.StatusCode.NOT_FOUND
    for subscription in (sub, other):
        await unsubscribe(hooks, admin, subscription)


async def test_a_redelivery_answers_the_row_it_queued_while_the_job_races_it(
    hooks: Stub,
    admin: Metadata,
    orders: orders_pb2_grpc.OrderServiceStub,
    ctx: AppContext,
    accounts: Accounts,
    receiver: Receiver,
) -> None:
    """Redeliver answers the delivery as its own update left it (pending, no attempt yet), even
    when the delivery job claims it at that moment; or NOT_FOUND while it is being sent."""
    sub = await subscribe(hooks, admin, receiver.url("/ok"), ["order.created"])
    await place_order(orders, ctx, accounts)
    await run_deliveries(ctx, sub.id, 1)
    [delivery] = (await deliveries(hooks, admin, sub.id)).items
    request = webhooks_pb2.RedeliverRequest(subscription_id=sub.id, delivery_id=delivery.id)
    answered = 0
    for _ in range(15):
        reply, _ = await asyncio.gather(
            hooks.Redeliver(request, metadata=admin),
            deliver_due(ctx.pool, ctx.settings),
            return_exceptions=True,
        )
        if isinstance(reply, grpc.aio.AioRpcError):
            assert reply.code() == grpc.StatusCode.NOT_FOUND  # it was being sent right then
        else:
            assert (reply.id, reply.status, reply.attempts) == (
                delivery.id,
                webhooks_pb2.DELIVERY_STATUS_PENDING,
                0,
            )
            answered += 1
        await run_deliveries(ctx, sub.id, 1)
    assert answered
    await unsubscribe(hooks, admin, sub)


async def test_the_delivery_log_pages_newest_first_with_rest_cursors(
    hooks: Stub,
    admin: Metadata,
    orders: orders_pb2_grpc.OrderServiceStub,
    ctx: AppContext,
    accounts: Accounts,
    receiver: Receiver,
    api: ApiClient,
) -> None:
    sub = await subscribe(hooks, admin, receiver.url("/ok"), ["order.created"])
    for _ in range(3):
        await place_order(orders, ctx, accounts)
    await run_deliveries(ctx, sub.id, 3)

    first = await deliveries(hooks, admin, sub.id, limit=2)
    second = await deliveries(hooks, admin, sub.id, limit=2, cursor=first.next_cursor)

    ids = [d.id for d in (*first.items, *second.items)]
    assert len(first.items) == 2 and first.next_cursor != ""
    assert len(second.items) == 1 and second.next_cursor == ""
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3
    token = admin[0][1].removeprefix("Bearer ")
    rest = await api.get(
        f"/api/v1/webhooks/{sub.id}/deliveries?limit=2&cursor={first.next_cursor}", token=token
    )
    assert [d["id"] for d in rest.json()["items"]] == [d.id for d in second.items]
    await unsubscribe(hooks, admin, sub)


@pytest.mark.parametrize(
    "limit, cursor, field",
    [(101, "", "limit"), (-1, "", "limit"), (0, "abc", "cursor"), (0, "0", "cursor")],
)
async def test_a_bad_page_is_invalid_argument(
    hooks: Stub, admin: Metadata, receiver: Receiver, limit: int, cursor: str, field: str
) -> None:
    sub = await subscribe(hooks, admin, receiver.url("/ok"), ["order.paid"])

    refused = await rpc_error(deliveries(hooks, admin, sub.id, limit=limit, cursor=cursor))

    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}:" in (refused.details() or ""), refused.details()
    await unsubscribe(hooks, admin, sub)


async def test_the_log_of_an_unknown_subscription_is_not_found(
    hooks: Stub, admin: Metadata
) -> None:
    missing = await rpc_error(deliveries(hooks, admin, 999_999))

    assert missing.code() == grpc.StatusCode.NOT_FOUND


def _sent_to(receiver: Receiver, delivery_id: int) -> list[Any]:
    return [
        r for r in receiver.at("/ok") if r.headers.get("Storefront-Delivery") == str(delivery_id)
    ]


def _verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """What a receiver does with Storefront-Signature."""
    parts = dict(p.split("=", 1) for p in headers["Storefront-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())
