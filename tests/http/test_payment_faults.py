"""Payments when the provider's word is lost, late or refused halfway: a refund whose answer never
arrived is asked again under the same provider key (money goes back once), a capture that
arrives after its order expired is recorded and given back, a refused claim racing a successful
one leaves the order as paid as its money, and staff cannot mark paid an order whose payment is
under way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from server.context import AppContext
from server.services import orders
from server.services.payments.captures import CLAIMED_BACK
from server.services.payments.provider import (
    ChargeResult,
    PaymentProvider,
    ProviderUnavailable,
    RefundResult,
)
from server.services.payments.refunds import settle_unanswered
from tests.conftest import ApiClient
from tests.orders_support import Accounts, create_product, expire_reservations, fill_cart

ORDERS = "/api/v1/orders"


class FlakyProvider:
    """The test provider with faults: refund answers lost after the refund was made, refunds of
    given amounts refused, authorisations whose answer waits at a gate."""

    def __init__(self, inner: PaymentProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.refund_keys: list[str] = []  # one per refund the provider made
        self.lose_refund_answers = 0
        self.unreachable = False
        self.refuse_amounts: set[int] = set()
        self.refund_gates: dict[int, asyncio.Event] = {}
        self.refund_entered: dict[int, asyncio.Event] = {}
        self.authorize_gate: asyncio.Event | None = None
        self.authorize_entered = asyncio.Event()

    async def authorize(self, **kwargs: Any) -> ChargeResult:
        result = await self.inner.authorize(**kwargs)  # the card is charged...
        if self.authorize_gate is not None:
            self.authorize_entered.set()
            await self.authorize_gate.wait()  # ...and the answer is slow to arrive
        return result

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> ChargeResult:
        return await self.inner.capture(reference, amount, idempotency_key)

    async def void(self, reference: str, idempotency_key: str) -> ChargeResult:
        return await self.inner.void(reference, idempotency_key)

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> RefundResult:
        if self.unreachable:
            raise ProviderUnavailable("the test provider is down")
        if amount in self.refund_gates:
            self.refund_entered[amount].set()
            await self.refund_gates[amount].wait()
        if amount in self.refuse_amounts:
            return RefundResult("failed", "re_refused", "insufficient_funds")
        # A provider dedups by idempotency key: the same key again is the same refund.
        if idempotency_key not in self.refund_keys:
            self.refund_keys.append(idempotency_key)
        result = await self.inner.refund(reference, amount, idempotency_key)
        if self.lose_refund_answers:
            self.lose_refund_answers -= 1
            raise ProviderUnavailable("timed out reading the answer")  # after the refund
        return result


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


@pytest.fixture(scope="module")
async def admin(accounts: Accounts) -> str:
    return (await accounts.create("admin"))[1]


@pytest.fixture
def provider(ctx: AppContext) -> Iterator[FlakyProvider]:
    original = ctx.payments
    assert original is not None
    flaky = FlakyProvider(original)
    ctx.payments = flaky
    yield flaky
    ctx.payments = original


async def an_order(api: ApiClient, ctx: AppContext, accounts: Accounts) -> tuple[dict, str]:
    """A fresh customer's pending order of 2 x 1000: (order, owner's token)."""
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=20, price=1000)
    await fill_cart(ctx.pool, user.id, {product: 2})
    response = await api.post(ORDERS, json={}, token=token)
    assert response.status == 201, response.json()
    return response.json(), token


async def a_paid_order(api: ApiClient, ctx: AppContext, accounts: Accounts) -> tuple[dict, str]:
    order, token = await an_order(api, ctx, accounts)
    paid = await api.post(
        f"{ORDERS}/{order['id']}/payments", json={"token": "tok_visa"}, token=token
    )
    assert paid.status == 201, paid.json()
    return order, token


async def payment_of(api: ApiClient, order: dict, token: str) -> dict[str, Any]:
    items = (await api.get(f"{ORDERS}/{order['id']}/payments", token=token)).json()["items"]
    return items[-1]


async def refunds_of(api: ApiClient, order: dict, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await api.get(f"{ORDERS}/{order['id']}/refunds", token=token)
    ).json()["items"]
    return items


async def status_of(api: ApiClient, order: dict, token: str) -> str:
    status: str = (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"]
    return status


# ---- a refund whose answer was lost ---------------------------------------------------------


async def test_a_lost_refund_answer_keeps_the_claim_and_a_same_key_retry_refunds_once(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str, provider: FlakyProvider
) -> None:
    order, token = await a_paid_order(api, ctx, accounts)
    url, key = f"{ORDERS}/{order['id']}/refunds", {"Idempotency-Key": "refund-lost-1"}
    provider.lose_refund_answers = 1

    lost = await api.post(url, json={"amount": 500}, token=admin, headers=key)

    assert lost.status == 503 and "same Idempotency-Key" in lost.json()["detail"]
    [claim] = await refunds_of(api, order, token)
    assert claim["status"] == "pending"
    payment = await payment_of(api, order, token)
    assert (payment["status"], payment["refunded"]) == ("partially_refunded", 500)

    retried = await api.post(url, json={"amount": 500}, token=admin, headers=key)

    assert retried.status == 201, retried.json()
    assert retried.json()["id"] == claim["id"] and retried.json()["status"] == "succeeded"
    assert provider.refund_keys == [f"refund-{claim['id']}"]  # asked twice, one refund
    again = await api.post(url, json={"amount": 500}, token=admin, headers=key)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    payment = await payment_of(api, order, token)
    assert (payment["status"], payment["refunded"]) == ("partially_refunded", 500)


async def test_concurrent_refunds_with_one_key_make_one_refund_and_say_which_is_first(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str, provider: FlakyProvider
) -> None:
    order, token = await a_paid_order(api, ctx, accounts)
    url, key = f"{ORDERS}/{order['id']}/refunds", {"Idempotency-Key": "refund-burst"}

    answers = await asyncio.gather(
        *(api.post(url, json={"amount": 300}, token=admin, headers=key) for _ in range(6))
    )

    done = [r for r in answers if r.status == 201]
    assert done and all(r.status in (201, 409) for r in answers), [r.status for r in answers]
    fresh = [r for r in done if "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1 and {r.json()["id"] for r in done} == {fresh[0].json()["id"]}
    assert len(await refunds_of(api, order, token)) == 1
    assert len(provider.refund_keys) == 1
    assert (await payment_of(api, order, token))["refunded"] == 300


async def test_the_settling_job_finishes_a_claim_nobody_retried(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str, provider: FlakyProvider
) -> None:
    order, token = await a_paid_order(api, ctx, accounts)
    provider.lose_refund_answers = 1
    lost = await api.post(f"{ORDERS}/{order['id']}/refunds", json={"amount": 2000}, token=admin)
    assert lost.status == 503
    [claim] = await refunds_of(api, order, token)

    assert await settle_unanswered(ctx, older_than=3600) == 0  # still young: may be in flight
    provider.unreachable = True
    assert await settle_unanswered(ctx, older_than=0) == 0  # the provider is still down
    assert (await refunds_of(api, order, token))[0]["status"] == "pending"
    provider.unreachable = False

    assert await settle_unanswered(ctx, older_than=0) >= 1

    [settled] = await refunds_of(api, order, token)
    assert (settled["id"], settled["status"]) == (claim["id"], "succeeded")
    assert provider.refund_keys == [f"refund-{claim['id']}"]
    assert await status_of(api, order, token) == "refunded"
    assert await settle_unanswered(ctx, older_than=0) == 0  # nothing left to settle


async def test_a_refund_the_provider_refuses_is_undone(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str, provider: FlakyProvider
) -> None:
    order, token = await a_paid_order(api, ctx, accounts)
    provider.refuse_amounts.add(700)
    refused = await api.post(f"{ORDERS}/{order['id']}/refunds", json={"amount": 700}, token=admin)
    assert refused.status == 409
    assert [r["status"] for r in await refunds_of(api, order, token)] == ["failed"]
    payment = await payment_of(api, order, token)
    assert (payment["status"], payment["refunded"]) == ("captured", 0)


async def test_a_refused_claim_racing_a_full_refund_leaves_the_order_paid(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str, provider: FlakyProvider
) -> None:
    """B (400) is claimed and waits for the provider; A (the other 1600) is claimed and
    succeeds, so the claims add up to the capture; then the provider refuses B. The order must
    not be `refunded`: 400 is still captured."""
    order, token = await a_paid_order(api, ctx, accounts)
    url = f"{ORDERS}/{order['id']}/refunds"
    provider.refund_gates[400] = asyncio.Event()
    provider.refund_entered[400] = asyncio.Event()
    provider.refuse_amounts.add(400)
    b = asyncio.ensure_future(api.post(url, json={"amount": 400}, token=admin))
    await asyncio.wait_for(provider.refund_entered[400].wait(), 10)

    a = await api.post(url, json={"amount": 1600}, token=admin)
    assert a.status == 201 and await status_of(api, order, token) == "paid"
    provider.refund_gates[400].set()
    assert (await b).status == 409

    assert await status_of(api, order, token) == "paid"
    payment = await payment_of(api, order, token)
    assert (payment["status"], payment["refunded"]) == ("partially_refunded", 1600)
    shipped = await api.patch(
        f"{ORDERS}/{order['id']}/status", json={"status": "shipped"}, token=admin
    )
    assert shipped.status == 200
    provider.refuse_amounts.clear()
    rest = await api.post(url, json={"amount": 400}, token=admin)
    assert rest.status == 201 and await status_of(api, order, token) == "refunded"


# ---- a capture that arrives after its order expired ------------------------------------------


async def pay_while_the_order_expires(
    api: ApiClient, ctx: AppContext, provider: FlakyProvider, order: dict, token: str
) -> Any:
    """Pay; the provider charges the card, and its answer arrives after the expiry job has
    cancelled the order."""
    provider.authorize_gate = asyncio.Event()
    paying = asyncio.ensure_future(
        api.post(f"{ORDERS}/{order['id']}/payments", json={"token": "tok_visa"}, token=token)
    )
    await asyncio.wait_for(provider.authorize_entered.wait(), 10)
    await expire_reservations(ctx.pool, [order["id"]])
    async with ctx.pool.acquire() as conn:
        assert await orders.cancel_expired_unpaid(conn) == 1
    provider.authorize_gate.set()
    return await paying


async def test_a_capture_answered_after_the_order_expired_is_recorded_and_refunded(
    api: ApiClient, ctx: AppContext, accounts: Accounts, provider: FlakyProvider
) -> None:
    order, token = await an_order(api, ctx, accounts)

    answer = await pay_while_the_order_expires(api, ctx, provider, order, token)

    assert answer.status == 409, answer.json()
    assert "refunded in full" in answer.json()["detail"]
    assert await status_of(api, order, token) == "cancelled"
    payment = await payment_of(api, order, token)
    assert (payment["status"], payment["captured"], payment["refunded"]) == (
        "refunded",
        2000,
        2000,
    )
    [refund] = await refunds_of(api, order, token)
    assert (refund["amount"], refund["status"], refund["reason"]) == (
        2000,
        "succeeded",
        CLAIMED_BACK,
    )
    assert provider.refund_keys == [f"refund-{refund['id']}"]


async def test_a_late_capture_whose_refund_cannot_be_asked_is_left_to_the_job(
    api: ApiClient, ctx: AppContext, accounts: Accounts, provider: FlakyProvider
) -> None:
    order, token = await an_order(api, ctx, accounts)
    provider.unreachable = True  # refunds cannot be asked
    assert (await pay_while_the_order_expires(api, ctx, provider, order, token)).status == 409
    [claim] = await refunds_of(api, order, token)
    assert claim["status"] == "pending"

    provider.unreachable = False
    assert await settle_unanswered(ctx, older_than=0) >= 1

    [refund] = await refunds_of(api, order, token)
    assert refund["status"] == "succeeded"
    assert (await payment_of(api, order, token))["status"] == "refunded"


# ---- staff and a payment under way ----------------------------------------------------------


async def test_staff_cannot_mark_paid_an_order_whose_payment_is_authorised(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, token = await an_order(api, ctx, accounts)
    held = await api.post(
        f"{ORDERS}/{order['id']}/payments",
        json={"token": "tok_visa", "capture": False},
        token=token,
    )
    assert held.status == 201 and held.json()["status"] == "authorized"

    marked = await api.patch(f"{ORDERS}/{order['id']}/status", json={"status": "paid"}, token=admin)

    assert marked.status == 409 and "capture it" in marked.json()["detail"]
    assert await status_of(api, order, token) == "pending"
    captured = await api.post(f"/api/v1/payments/{held.json()['id']}/capture", json={}, token=admin)
    assert captured.status == 200 and await status_of(api, order, token) == "paid"
    voided = await api.post(f"/api/v1/payments/{held.json()['id']}/void", token=token)
    assert voided.status == 409
