"""Payments and refunds over REST with the built-in test provider: the payment state machine
and the order following it, the stock reservation it settles, refunds that never pass what was
captured (raced), idempotent refunds, and the refusals that change nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from server.context import AppContext
from server.services import orders
from tests.conftest import ApiClient
from tests.orders_support import (
    Accounts,
    create_product,
    create_sized_product,
    expire_reservations,
    fill_cart,
    stock_of,
)

ORDERS = "/api/v1/orders"


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


@pytest.fixture(scope="module")
async def admin(accounts: Accounts) -> str:
    return (await accounts.create("admin"))[1]


async def an_order(
    api: ApiClient, ctx: AppContext, accounts: Accounts, *, quantity: int = 2, price: int = 1000
) -> tuple[dict[str, Any], str, int]:
    """A fresh customer's pending order of `quantity` units: (order, owner's token, product)."""
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=20, price=price)
    await fill_cart(ctx.pool, user.id, {product: quantity})
    response = await api.post(ORDERS, json={}, token=token)
    assert response.status == 201, response.json()
    return response.json(), token, product


async def pay(
    api: ApiClient, order: dict[str, Any], token: str, card: str = "tok_visa", **body: Any
) -> Any:
    return await api.post(
        f"{ORDERS}/{order['id']}/payments", json={"token": card, **body}, token=token
    )


async def order_status(api: ApiClient, order: dict[str, Any], token: str) -> str:
    status: str = (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"]
    return status


async def reservation_states(ctx: AppContext, order_id: int) -> list[str]:
    rows = await ctx.pool.fetch(
        "SELECT state FROM stock_reservations WHERE order_id = $1 ORDER BY variant_id", order_id
    )
    return [r["state"] for r in rows]


# ---- paying ---------------------------------------------------------------------------------


async def test_checkout_holds_the_stock_until_the_order_is_paid(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, product = await an_order(api, ctx, accounts)
    assert order["status"] == "pending" and order["reserved_until"] is not None
    assert await reservation_states(ctx, order["id"]) == ["held"]
    assert await stock_of(ctx.pool, product) == 18

    paid = await pay(api, order, token)

    assert paid.status == 201, paid.json()
    payment = paid.json()
    assert (payment["status"], payment["amount"], payment["captured"]) == (
        "captured",
        order["total"],
        order["total"],
    )
    after = (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()
    assert after["status"] == "paid" and after["reserved_until"] is None
    assert await reservation_states(ctx, order["id"]) == ["committed"]
    assert await stock_of(ctx.pool, product) == 18


async def test_a_declined_card_is_402_and_the_order_can_be_paid_again(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, _ = await an_order(api, ctx, accounts)
    declined = await pay(api, order, token, "tok_declined")
    assert declined.status == 402
    problem = declined.json()
    assert problem["errors"][0]["field"] == "token"
    assert problem["errors"][0]["message"] == "card_declined"
    assert await order_status(api, order, token) == "pending"

    assert (await pay(api, order, token)).status == 201
    listed = (await api.get(f"{ORDERS}/{order['id']}/payments", token=token)).json()["items"]
    assert [(p["id"], p["status"]) for p in listed] == [
        (problem["errors"][0]["payment_id"], "failed"),
        (listed[1]["id"], "captured"),
    ]


async def test_an_unreachable_provider_is_503_and_a_retry_pays_once(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, _ = await an_order(api, ctx, accounts)
    down = await pay(api, order, token, "tok_unavailable")
    assert down.status == 503 and down.headers["Retry-After"] == "5"
    assert await order_status(api, order, token) == "pending"

    retried = await pay(api, order, token)

    assert retried.status == 201
    listed = (await api.get(f"{ORDERS}/{order['id']}/payments", token=token)).json()["items"]
    assert [p["status"] for p in listed] == ["captured"]  # the same attempt, retried


async def test_a_paid_order_cannot_be_paid_or_cancelled_again(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, token, product = await an_order(api, ctx, accounts)
    assert (await pay(api, order, token)).status == 201
    assert (await pay(api, order, token)).status == 409
    cancel = await api.post(f"{ORDERS}/{order['id']}/cancel", token=admin)
    assert cancel.status == 409 and "refund" in cancel.json()["detail"]
    assert await order_status(api, order, token) == "paid"
    assert await stock_of(ctx.pool, product) == 18


async def test_someone_elses_order_cannot_be_paid(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, _, _ = await an_order(api, ctx, accounts)
    _, stranger = await accounts.create()
    assert (await pay(api, order, stranger)).status == 404
    assert (await api.get(f"{ORDERS}/{order['id']}/payments", token=stranger)).status == 404


@pytest.mark.parametrize(
    "body",
    [{"token": ""}, {"token": "tok visa"}, {}, {"token": "tok_visa", "amount": 5}],
)
async def test_a_malformed_payment_is_422_and_changes_nothing(
    api: ApiClient, ctx: AppContext, accounts: Accounts, body: dict[str, Any]
) -> None:
    order, token, _ = await an_order(api, ctx, accounts)
    response = await api.post(f"{ORDERS}/{order['id']}/payments", json=body, token=token)
    assert response.status == 422
    assert (await api.get(f"{ORDERS}/{order['id']}/payments", token=token)).json()["items"] == []


async def test_an_authorisation_is_captured_once(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, token, _ = await an_order(api, ctx, accounts)
    authorised = await pay(api, order, token, capture=False)
    assert authorised.status == 201 and authorised.json()["status"] == "authorized"
    assert await order_status(api, order, token) == "pending"
    capture = f"/api/v1/payments/{authorised.json()['id']}/capture"
    assert (await api.post(capture, json={}, token=token)).status == 403  # staff only

    both = await asyncio.gather(*(api.post(capture, json={}, token=admin) for _ in range(2)))

    assert sorted(r.status for r in both) == [200, 409]
    winner = next(r for r in both if r.status == 200).json()
    assert winner["status"] == "captured" and winner["captured"] == order["total"]
    assert await order_status(api, order, token) == "paid"
    assert (await api.post(capture, json={}, token=admin)).status == 409


async def test_an_authorised_order_is_not_expired_but_a_void_cancels_and_restocks(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, product = await an_order(api, ctx, accounts)
    payment = (await pay(api, order, token, capture=False)).json()
    await expire_reservations(ctx.pool, [order["id"]])
    async with ctx.pool.acquire() as conn:
        await orders.cancel_expired_unpaid(conn)
    assert await order_status(api, order, token) == "pending"  # the hold waits for the capture
    cancel = await api.post(f"{ORDERS}/{order['id']}/cancel", token=token)
    assert cancel.status == 409  # void it instead

    voided = await api.post(f"/api/v1/payments/{payment['id']}/void", token=token)

    assert voided.status == 200 and voided.json()["status"] == "voided"
    assert await order_status(api, order, token) == "cancelled"
    assert await stock_of(ctx.pool, product) == 20
    assert await reservation_states(ctx, order["id"]) == ["released"]


async def test_an_expired_order_without_payment_releases_its_stock(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, product = await an_order(api, ctx, accounts)
    await expire_reservations(ctx.pool, [order["id"]])
    async with ctx.pool.acquire() as conn:
        await orders.cancel_expired_unpaid(conn)
    assert await order_status(api, order, token) == "cancelled"
    assert await reservation_states(ctx, order["id"]) == ["released"]
    assert await stock_of(ctx.pool, product) == 20
    assert (await pay(api, order, token)).status == 409


# ---- refunds --------------------------------------------------------------------------------


async def a_paid_order(
    api: ApiClient, ctx: AppContext, accounts: Accounts, **kwargs: Any
) -> tuple[dict[str, Any], str, int]:
    order, token, product = await an_order(api, ctx, accounts, **kwargs)
    assert (await pay(api, order, token)).status == 201
    return order, token, product


async def refund(
    api: ApiClient, order: dict[str, Any], admin: str, key: str | None = None, **body: Any
) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    return await api.post(
        f"{ORDERS}/{order['id']}/refunds", json=body, token=admin, headers=headers
    )


async def test_partial_then_full_refunds_make_the_order_refunded(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, token, product = await a_paid_order(api, ctx, accounts)
    variant = order["items"][0]["variant_id"]
    first = await refund(
        api, order, admin, amount=500, items=[{"variant_id": variant, "quantity": 1}]
    )
    assert first.status == 201, first.json()
    assert first.json()["restocked"] == [{"variant_id": variant, "quantity": 1}]
    assert await stock_of(ctx.pool, product) == 19
    assert await order_status(api, order, token) == "paid"

    rest = await refund(api, order, admin, amount=order["total"] - 500, restock=True)

    assert rest.status == 201
    assert rest.json()["restocked"] == [{"variant_id": variant, "quantity": 1}]
    assert await stock_of(ctx.pool, product) == 20
    assert await order_status(api, order, token) == "refunded"
    payment = (await api.get(f"{ORDERS}/{order['id']}/payments", token=token)).json()["items"][0]
    assert (payment["status"], payment["refunded"]) == ("refunded", order["total"])
    seen = (await api.get(f"{ORDERS}/{order['id']}/refunds", token=token)).json()["items"]
    assert [r["amount"] for r in seen] == [500, order["total"] - 500]


async def test_a_refund_never_exceeds_what_is_left_and_changes_nothing_when_refused(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, token, product = await a_paid_order(api, ctx, accounts)
    over = await refund(api, order, admin, amount=order["total"] + 1, restock=True)
    assert over.status == 409
    assert over.json()["errors"][0] == {
        "field": "amount",
        "message": f"at most {order['total']}",
        "refundable": order["total"],
    }
    too_many = await refund(
        api,
        order,
        admin,
        amount=1,
        items=[{"variant_id": order["items"][0]["variant_id"], "quantity": 3}],
    )
    assert too_many.status == 422
    assert (await refund(api, order, admin, amount=0)).status == 422
    assert (await refund(api, order, token, amount=1)).status == 403  # staff only
    assert (await api.get(f"{ORDERS}/{order['id']}/refunds", token=admin)).json()["items"] == []
    assert await stock_of(ctx.pool, product) == 18


async def test_an_unpaid_order_has_nothing_to_refund(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, _, _ = await an_order(api, ctx, accounts)
    assert (await refund(api, order, admin, amount=1)).status == 409


async def test_concurrent_refunds_never_pass_the_captured_amount(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    # Captured 10 x 1000 = 10 000; 25 refunds of 3 000 race: exactly three can fit.
    order, token, _ = await a_paid_order(api, ctx, accounts, quantity=10)

    answers = await asyncio.gather(*(refund(api, order, admin, amount=3000) for _ in range(25)))

    assert Counter(r.status for r in answers) == {201: 3, 409: 22}
    payment = (await api.get(f"{ORDERS}/{order['id']}/payments", token=token)).json()["items"][0]
    assert payment["refunded"] == 9000 and payment["status"] == "partially_refunded"
    refunds = (await api.get(f"{ORDERS}/{order['id']}/refunds", token=admin)).json()["items"]
    assert sum(r["amount"] for r in refunds) == 9000


async def test_concurrent_restocks_never_put_back_more_than_was_sold(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, _, product = await a_paid_order(api, ctx, accounts, quantity=4)
    variant = order["items"][0]["variant_id"]

    answers = await asyncio.gather(
        *(
            refund(api, order, admin, amount=100, items=[{"variant_id": variant, "quantity": 1}])
            for _ in range(10)
        )
    )

    restocked = sum(
        line["quantity"] for r in answers if r.status == 201 for line in r.json()["restocked"]
    )
    assert restocked == 4 and await stock_of(ctx.pool, product) == 20


async def test_a_refund_with_an_idempotency_key_happens_once(
    api: ApiClient, ctx: AppContext, accounts: Accounts, admin: str
) -> None:
    order, _, _ = await a_paid_order(api, ctx, accounts)

    answers = await asyncio.gather(
        *(refund(api, order, admin, "refund-once", amount=700) for _ in range(10))
    )

    statuses = Counter(r.status for r in answers)
    assert statuses[201] >= 1 and set(statuses) <= {201, 409}  # 409: the first still running
    replay = await refund(api, order, admin, "refund-once", amount=700)
    assert replay.status == 201 and replay.headers.get("Idempotent-Replayed") == "true"
    first = next(r for r in answers if r.status == 201 and not r.headers.get("Idempotent-Replayed"))
    assert replay.json() == first.json()
    other_body = await refund(api, order, admin, "refund-once", amount=701)
    assert other_body.status == 422
    refunds = (await api.get(f"{ORDERS}/{order['id']}/refunds", token=admin)).json()["items"]
    assert [r["amount"] for r in refunds] == [700]


async def test_variants_of_one_product_never_oversell_under_racing_checkouts(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    """60 shoppers race for S (5 units) and L (3 units) of one product, each in their own cart
    order (some S+L, some L+S, some one size): exactly the stock is sold, per variant, and no
    checkout deadlocks."""
    product, sizes = await create_sized_product(ctx.pool, stocks={"S": 5, "L": 3})
    shoppers = [await accounts.create() for _ in range(60)]
    wanted = [("S",), ("L",), ("S", "L"), ("L", "S")]
    for n, (user, _) in enumerate(shoppers):
        await ctx.pool.execute("INSERT INTO carts (user_id) VALUES ($1)", user.id)
        for offset, size in enumerate(wanted[n % 4]):
            await ctx.pool.execute(
                """INSERT INTO cart_items (user_id, product_id, variant_id, quantity, added_at)
                   VALUES ($1, $2, $3, 1, now() + $4 * interval '1 ms')""",
                user.id,
                product,
                sizes[size],
                offset,
            )

    answers = await asyncio.gather(
        *(api.post(ORDERS, json={}, token=token, timeout=60) for _, token in shoppers)
    )

    assert set(r.status for r in answers) <= {201, 409}, [r.json() for r in answers]
    sold = dict(
        await ctx.pool.fetch(
            """SELECT variant_id, sum(quantity) FROM order_items WHERE product_id = $1
                GROUP BY variant_id""",
            product,
        )
    )
    assert sold == {sizes["S"]: 5, sizes["L"]: 3}
    left = await ctx.pool.fetch("SELECT stock FROM product_variants WHERE product_id = $1", product)
    assert [r["stock"] for r in left] == [0, 0]


async def test_the_stripe_webhook_is_404_on_a_store_without_stripe(api: ApiClient) -> None:
    answer = await api.post(
        "/api/v1/payments/webhooks/stripe",
        body=b'{"id": "evt_1"}',
        headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"},
    )
    assert answer.status == 404
