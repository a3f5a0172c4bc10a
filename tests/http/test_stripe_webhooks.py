"""A gateway configured for Stripe (PAYMENT_PROVIDER=stripe, against a local stand-in of its
API): payments that Stripe settles later by webhook, and the webhook endpoint's refusals —
forged, stale, replayed or malformed deliveries change nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from server.context import AppContext
from server.services import orders
from server.services.payments import stripe
from server.services.payments.captures import CLAIMED_BACK
from tests.conftest import ApiClient, make_settings
from tests.orders_support import Accounts, create_product, expire_reservations, fill_cart, stock_of
from tests.stripe_support import FakeStripe, recorded_event
from workers.broker import build_context_with_jobs

SECRET = "whsec_gateway_test_secret"
WEBHOOK = "/api/v1/payments/webhooks/stripe"
ORDERS = "/api/v1/orders"


@pytest.fixture(scope="module")
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    server = FakeStripe()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def ctx(database_url: str, fake_stripe: FakeStripe) -> AsyncIterator[AppContext]:
    settings = make_settings(
        database_url,
        PAYMENT_PROVIDER="stripe",
        STRIPE_API_KEY="sk_test_gateway",
        STRIPE_WEBHOOK_SECRET=SECRET,
        STRIPE_API_BASE=fake_stripe.base_url,
    )
    context = await build_context_with_jobs(settings)
    yield context
    await context.close()


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


async def a_paid_attempt(
    api: ApiClient, ctx: AppContext, accounts: Accounts, token_name: str = "tok_processing"
) -> tuple[dict[str, Any], dict[str, Any], str, int]:
    """A pending order paid with `token_name`: (order, payment, owner token, product)."""
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10, price=2000)
    await fill_cart(ctx.pool, user.id, {product: 1})
    order = (await api.post(ORDERS, json={}, token=token)).json()
    paid = await api.post(
        f"{ORDERS}/{order['id']}/payments", json={"token": token_name}, token=token
    )
    assert paid.status == 201, paid.json()
    return order, paid.json(), token, product


async def reference_of(ctx: AppContext, payment_id: int) -> str:
    reference: str = await ctx.pool.fetchval(
        "SELECT reference FROM payments WHERE id = $1", payment_id
    )
    return reference


async def deliver(
    api: ApiClient, event: dict[str, Any], *, at: int | None = None, secret: str = SECRET
) -> Any:
    body = orjson.dumps(event)
    header = stripe.sign(body, secret, at if at is not None else int(time.time()))
    return await api.post(
        WEBHOOK, body=body, headers={"Content-Type": "application/json", "Stripe-Signature": header}
    )


async def payment_of(api: ApiClient, order: dict[str, Any], token: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = (
        await api.get(f"{ORDERS}/{order['id']}/payments", token=token)
    ).json()["items"]
    return items[-1]


async def test_a_processing_payment_is_settled_by_the_succeeded_webhook(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, payment, token, _ = await a_paid_attempt(api, ctx, accounts)
    assert payment["status"] == "pending" and payment["provider"] == "stripe"
    intent = await reference_of(ctx, payment["id"])
    event = recorded_event(
        "payment_intent.succeeded", id=intent, amount=order["total"], amount_received=order["total"]
    )

    answer = await deliver(api, event)

    assert answer.status == 200 and answer.json() == {
        "received": True,
        "applied": True,
        "duplicate": False,
    }
    settled = await payment_of(api, order, token)
    assert (settled["status"], settled["captured"]) == ("captured", order["total"])
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "paid"


async def test_forged_and_stale_deliveries_are_refused_and_change_nothing(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, payment, token, _ = await a_paid_attempt(api, ctx, accounts)
    intent = await reference_of(ctx, payment["id"])
    event = recorded_event("payment_intent.succeeded", id=intent, amount_received=order["total"])

    forged = await deliver(api, event, secret="whsec_not_the_stores")
    stale = await deliver(api, event, at=int(time.time()) - 301)
    body = orjson.dumps(event)
    unsigned = await api.post(WEBHOOK, body=body, headers={"Content-Type": "application/json"})
    tampered_header = stripe.sign(body, SECRET, int(time.time()))
    tampered = await api.post(
        WEBHOOK,
        body=body.replace(b"succeeded", b"succeedeD"),
        headers={"Content-Type": "application/json", "Stripe-Signature": tampered_header},
    )

    for refused in (forged, stale, unsigned, tampered):
        assert refused.status == 400, refused.json()
        assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert (await payment_of(api, order, token))["status"] == "pending"
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "pending"
    # None of them was recorded either: the genuine delivery still applies.
    assert (await deliver(api, event)).json()["applied"] is True


async def test_the_same_signed_delivery_twice_is_a_replay(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, payment, _, _ = await a_paid_attempt(api, ctx, accounts)
    intent = await reference_of(ctx, payment["id"])
    event = recorded_event("payment_intent.succeeded", id=intent, amount_received=order["total"])
    body = orjson.dumps(event)
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": stripe.sign(body, SECRET, int(time.time())),
    }
    assert (await api.post(WEBHOOK, body=body, headers=headers)).status == 200
    replay = await api.post(WEBHOOK, body=body, headers=headers)
    assert replay.status == 400 and "replay" in replay.json()["detail"]
    # Stripe re-delivering the same event (a new signature) is acknowledged, not re-applied.
    again = await deliver(api, event, at=int(time.time()) + 1)
    assert again.status == 200 and again.json()["duplicate"] is True
    assert again.json()["applied"] is False


async def test_a_failed_payment_leaves_the_order_payable(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, payment, token, _ = await a_paid_attempt(api, ctx, accounts)
    intent = await reference_of(ctx, payment["id"])
    event = recorded_event("payment_intent.payment_failed", id=intent)

    assert (await deliver(api, event)).json()["applied"] is True

    failed = await payment_of(api, order, token)
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "Your card has insufficient funds."
    again = await api.post(
        f"{ORDERS}/{order['id']}/payments", json={"token": "tok_visa"}, token=token
    )
    assert again.status == 201 and again.json()["status"] == "captured"


async def test_a_declined_card_at_stripe_is_402(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=3)
    await fill_cart(ctx.pool, user.id, {product: 1})
    order = (await api.post(ORDERS, json={}, token=token)).json()
    declined = await api.post(
        f"{ORDERS}/{order['id']}/payments", json={"token": "tok_chargeDeclined"}, token=token
    )
    assert declined.status == 402
    assert declined.json()["errors"][0]["message"] == "Your card was declined."


async def test_refunds_go_to_stripe_and_a_dashboard_refund_is_recorded(
    api: ApiClient, ctx: AppContext, accounts: Accounts, fake_stripe: FakeStripe
) -> None:
    order, payment, token, product = await a_paid_attempt(api, ctx, accounts, "tok_visa")
    assert payment["status"] == "captured"
    admin = (await accounts.create("admin"))[1]
    refunded = await api.post(f"{ORDERS}/{order['id']}/refunds", json={"amount": 500}, token=admin)
    assert refunded.status == 201
    sent = fake_stripe.requests[-1]
    intent = await reference_of(ctx, payment["id"])
    assert sent.path == "/v1/refunds" and sent.form == {"payment_intent": intent, "amount": "500"}
    assert sent.headers["Idempotency-Key"] == f"refund-{refunded.json()['id']}"

    # The rest refunded in Stripe's dashboard: the gateway hears of it by webhook.
    event = recorded_event(
        "charge.refunded",
        payment_intent=intent,
        amount_captured=order["total"],
        amount_refunded=order["total"],
    )
    assert (await deliver(api, event)).json()["applied"] is True

    settled = await payment_of(api, order, token)
    assert (settled["status"], settled["refunded"]) == ("refunded", order["total"])
    refunds = (await api.get(f"{ORDERS}/{order['id']}/refunds", token=token)).json()["items"]
    assert [(r["amount"], r["reason"]) for r in refunds] == [
        (500, None),
        (order["total"] - 500, "refunded at the provider"),
    ]
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "refunded"
    assert await stock_of(ctx.pool, product) == 9  # money only: nothing was restocked


async def test_unknown_events_and_foreign_payments_are_acknowledged(api: ApiClient) -> None:
    other = await deliver(api, recorded_event("customer.created"))
    assert other.status == 200 and other.json()["applied"] is False
    foreign = recorded_event("payment_intent.succeeded", id="pi_not_ours")
    assert (await deliver(api, foreign)).json()["applied"] is False


async def test_a_signed_body_that_is_not_an_event_is_400(api: ApiClient) -> None:
    body = b'{"hello": "world"}'
    signature = stripe.sign(body, SECRET, int(time.time()))
    answer = await api.post(
        WEBHOOK,
        body=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
    assert answer.status == 400


async def test_a_capture_webhook_after_the_order_expired_is_recorded_and_refunded(
    api: ApiClient, ctx: AppContext, accounts: Accounts, fake_stripe: FakeStripe
) -> None:
    order, payment, token, _ = await a_paid_attempt(api, ctx, accounts)  # still processing
    intent = await reference_of(ctx, payment["id"])
    await expire_reservations(ctx.pool, [order["id"]])
    async with ctx.pool.acquire() as conn:
        assert await orders.cancel_expired_unpaid(conn) == 1
    assert (await payment_of(api, order, token))["status"] == "failed"
    event = recorded_event(
        "payment_intent.succeeded", id=intent, amount=order["total"], amount_received=order["total"]
    )

    answer = await deliver(api, event)

    assert answer.status == 200 and answer.json()["applied"] is True
    settled = await payment_of(api, order, token)
    assert (settled["status"], settled["captured"], settled["refunded"]) == (
        "refunded",
        order["total"],
        order["total"],
    )
    [refund] = (await api.get(f"{ORDERS}/{order['id']}/refunds", token=token)).json()["items"]
    assert (refund["status"], refund["reason"]) == ("succeeded", CLAIMED_BACK)
    asked = fake_stripe.requests[-1]
    assert asked.path == "/v1/refunds" and asked.form["payment_intent"] == intent
    assert asked.headers["Idempotency-Key"] == f"refund-{refund['id']}"
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "cancelled"


async def test_a_webhook_finds_a_payment_whose_creation_answer_was_lost_by_its_metadata(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10, price=2000)
    await fill_cart(ctx.pool, user.id, {product: 1})
    order = (await api.post(ORDERS, json={}, token=token)).json()
    lost = await api.post(
        f"{ORDERS}/{order['id']}/payments", json={"token": "tok_explode"}, token=token
    )
    assert lost.status == 503
    payment = await payment_of(api, order, token)
    assert payment["status"] == "pending" and await reference_of(ctx, payment["id"]) is None
    metadata = {"order_id": str(order["id"]), "payment_id": str(payment["id"])}
    intent = f"pi_lost_{order['id']}"  # Stripe created it; the gateway never heard its id

    # The payment id of this order under another order's id is not a match.
    other = dict(metadata, order_id=str(order["id"] + 1000))
    stray = recorded_event(
        "payment_intent.succeeded", id=intent, amount_received=2000, metadata=other
    )
    assert (await deliver(api, stray)).json()["applied"] is False

    event = recorded_event(
        "payment_intent.succeeded", id=intent, amount_received=2000, metadata=metadata
    )
    answer = await deliver(api, event)

    assert answer.status == 200 and answer.json()["applied"] is True
    settled = await payment_of(api, order, token)
    assert (settled["status"], settled["captured"]) == ("captured", 2000)
    assert await reference_of(ctx, payment["id"]) == intent
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "paid"


async def a_pending_refund(
    api: ApiClient, ctx: AppContext, accounts: Accounts, fake_stripe: FakeStripe, admin: str
) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
    """A captured order refunded in full, Stripe answering the refund `pending`:
    (order, owner token, PaymentIntent id, refund)."""
    order, payment, token, _ = await a_paid_attempt(api, ctx, accounts, "tok_visa")
    fake_stripe.refund_status = "pending"
    try:
        refunded = await api.post(
            f"{ORDERS}/{order['id']}/refunds", json={"amount": order["total"]}, token=admin
        )
    finally:
        fake_stripe.refund_status = "succeeded"
    assert refunded.status == 201 and refunded.json()["status"] == "pending"
    # Pending at Stripe is not money back yet: the order stays paid.
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "paid"
    return order, token, await reference_of(ctx, payment["id"]), refunded.json()


async def refund_reference(ctx: AppContext, refund_id: int) -> str:
    reference: str = await ctx.pool.fetchval(
        "SELECT reference FROM refunds WHERE id = $1", refund_id
    )
    return reference


async def test_a_pending_refund_settles_by_its_succeeded_event(
    api: ApiClient, ctx: AppContext, accounts: Accounts, fake_stripe: FakeStripe
) -> None:
    admin = (await accounts.create("admin"))[1]
    order, token, intent, refund = await a_pending_refund(api, ctx, accounts, fake_stripe, admin)
    event = recorded_event(
        "charge.refund.updated",
        id=await refund_reference(ctx, refund["id"]),
        payment_intent=intent,
        status="succeeded",
        failure_reason=None,
    )

    answer = await deliver(api, event)

    assert answer.json()["applied"] is True
    [settled] = (await api.get(f"{ORDERS}/{order['id']}/refunds", token=token)).json()["items"]
    assert settled["status"] == "succeeded"
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "refunded"
    again = dict(event, id=f"{event['id']}_again")  # another event about the settled refund
    assert (await deliver(api, again)).json()["applied"] is False


async def test_a_pending_refund_that_fails_gives_its_amount_back(
    api: ApiClient, ctx: AppContext, accounts: Accounts, fake_stripe: FakeStripe
) -> None:
    admin = (await accounts.create("admin"))[1]
    order, token, intent, refund = await a_pending_refund(api, ctx, accounts, fake_stripe, admin)
    event = recorded_event(
        "charge.refund.updated",
        id=await refund_reference(ctx, refund["id"]),
        payment_intent=intent,
        status="failed",
    )
    event["type"] = "refund.failed"  # the newer name of the same news

    answer = await deliver(api, event)

    assert answer.json()["applied"] is True
    [failed] = (await api.get(f"{ORDERS}/{order['id']}/refunds", token=token)).json()["items"]
    assert (failed["status"], failed["reason"]) == ("failed", "expired_or_canceled_card")
    settled = await payment_of(api, order, token)
    assert (settled["status"], settled["refunded"]) == ("captured", 0)
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "paid"
    retry = await api.post(
        f"{ORDERS}/{order['id']}/refunds", json={"amount": order["total"]}, token=admin
    )
    assert retry.status == 201 and retry.json()["status"] == "succeeded"
