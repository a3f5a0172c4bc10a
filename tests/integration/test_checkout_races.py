"""Checkout under contention, end to end: never oversold, never deadlocked, never doubled."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from server.context import AppContext
from server.domain.errors import Conflict, ValidationFailed
from server.domain.principal import Principal
from server.services import orders
from tests.conftest import ApiClient, Response
from tests.lock_support import wait_for_lock_waiters
from tests.orders_support import (
    Accounts,
    create_customers,
    create_product,
    create_promotion,
    expire_reservations,
    fill_cart,
    stock_of,
    variant_of,
)

ORDERS = "/api/v1/orders"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


def explicit(items: list[tuple[int, int]]) -> orders.OrderInput:
    return orders.parse_order_input({"items": [{"product_id": p, "quantity": q} for p, q in items]})


async def test_200_checkouts_for_10_units_sell_exactly_10(api: ApiClient, ctx: AppContext) -> None:
    product = await create_product(ctx.pool, stock=10)
    customers = await create_customers(ctx, 200)
    for user_id, _ in customers:
        await fill_cart(ctx.pool, user_id, {product: 1})

    responses = await asyncio.gather(
        *(api.post(ORDERS, json={}, token=token, timeout=120) for _, token in customers)
    )

    statuses = Counter(r.status for r in responses)
    assert statuses == {201: 10, 409: 190}, statuses
    assert await stock_of(ctx.pool, product) == 0
    sold = await ctx.pool.fetchval(
        "SELECT coalesce(sum(quantity), 0) FROM order_items WHERE product_id = $1", product
    )
    assert sold == 10
    refused = next(r for r in responses if r.status == 409).json()
    assert refused["errors"][0]["field"] == f"items.{await variant_of(ctx.pool, product)}"
    # The winners' carts are empty; the others still hold their line.
    cart_lines = await ctx.pool.fetchval(
        "SELECT count(*) FROM cart_items WHERE product_id = $1", product
    )
    assert cart_lines == 190


async def test_50_retries_of_one_key_place_one_order(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=100)
    await fill_cart(ctx.pool, user.id, {product: 2})
    key = {"Idempotency-Key": "double-click"}

    responses = await asyncio.gather(
        *(
            api.post(ORDERS, json={"note": "once"}, token=token, headers=key, timeout=120)
            for _ in range(50)
        )
    )

    fresh = [r for r in responses if r.status == 201 and "Idempotent-Replayed" not in r.headers]
    replays = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    in_flight = [r for r in responses if r.status == 409]
    assert len(fresh) == 1, Counter(r.status for r in responses)
    assert len(fresh) + len(replays) + len(in_flight) == 50
    assert all(r.status == 201 and r.body == fresh[0].body for r in replays)
    assert all("in progress" in r.json()["detail"] for r in in_flight)
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user.id) == 1
    assert await stock_of(ctx.pool, product) == 98

    later = await api.post(ORDERS, json={"note": "once"}, token=token, headers=key)
    assert later.status == 201 and later.body == fresh[0].body
    assert later.headers["Idempotent-Replayed"] == "true"
    other = await api.post(ORDERS, json={"note": "twice"}, token=token, headers=key)
    assert other.status == 422


async def test_a_checkout_that_outlives_its_key_lease_does_not_place_a_second_order(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    """The first request with a key stalls inside its transaction past the key's lease; a
    retry takes the key over and places the order. The first must then roll back (503), not
    commit a second order."""
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=100)
    await fill_cart(ctx.pool, user.id, {product: 2})
    key = {"Idempotency-Key": "slow-then-retried"}
    async with ctx.pool.acquire() as holder:
        stall = holder.transaction()
        await stall.start()
        await holder.execute("SELECT 1 FROM carts WHERE user_id = $1 FOR UPDATE", user.id)
        first = asyncio.ensure_future(api.post(ORDERS, json={}, token=token, headers=key))
        await wait_for_lock_waiters(ctx.pool, 1)  # the first holds the key, waits on the cart
        await ctx.pool.execute(  # ... for longer than the lease
            "UPDATE idempotency_keys SET created_at = now() - interval '1 hour' WHERE user_id = $1",
            user.id,
        )
        retry = asyncio.ensure_future(api.post(ORDERS, json={}, token=token, headers=key))
        await wait_for_lock_waiters(ctx.pool, 2)  # the retry took the key over, waits too
        await stall.rollback()
        answers = sorted([await first, await retry], key=lambda r: r.status)

    assert [r.status for r in answers] == [201, 503], [r.json() for r in answers]
    assert "lease" in answers[1].json()["detail"]
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user.id) == 1
    assert await stock_of(ctx.pool, product) == 98
    again = await api.post(ORDERS, json={}, token=token, headers=key)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == answers[0].json()["id"]


async def test_overlapping_multi_product_orders_never_deadlock(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    products = [await create_product(ctx.pool, stock=10_000) for _ in range(6)]
    customers = await create_customers(ctx, 80)
    rng = random.Random(5)
    expected_taken: Counter[int] = Counter()
    rest_calls = []
    service_calls = []
    for index, (user_id, token) in enumerate(customers):
        chosen = rng.sample(products, k=rng.randint(2, len(products)))
        # Half ascending, half descending, the rest shuffled: opposite lock orders if the
        # implementation followed the caller's order.
        if index % 3 == 0:
            chosen.sort()
        elif index % 3 == 1:
            chosen.sort(reverse=True)
        lines = [(p, rng.randint(1, 3)) for p in chosen]
        expected_taken.update(dict(lines))
        if index % 2:
            await fill_cart(ctx.pool, user_id, dict(lines))
            rest_calls.append(api.post(ORDERS, json={}, token=token, timeout=120))
        else:
            service_calls.append(
                orders.create_order(ctx, Principal(user_id, "customer"), explicit(lines))
            )
    # Cancellations give stock back concurrently, touching the same rows.
    _, admin = await accounts.create("admin")
    to_cancel = []
    for user_id, _ in customers[:10]:
        lines = [(p, 1) for p in sorted(products, reverse=True)]
        placement = await orders.create_order(ctx, Principal(user_id, "customer"), explicit(lines))
        assert placement.order is not None
        to_cancel.append(placement.order.id)
    cancels = [
        api.post(f"{ORDERS}/{order_id}/cancel", token=admin, timeout=120) for order_id in to_cancel
    ]

    results = await asyncio.gather(*rest_calls, *service_calls, *cancels, return_exceptions=True)

    failures = [
        r
        for r in results
        if isinstance(r, BaseException) or (isinstance(r, Response) and r.status not in (200, 201))
    ]
    assert failures == []
    for product in products:
        assert await stock_of(ctx.pool, product) == 10_000 - expected_taken[product]


async def test_two_concurrent_cancels_restock_once(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    _, admin = await accounts.create("admin")
    for _ in range(5):
        user, token = await accounts.create()
        product = await create_product(ctx.pool, stock=10)
        await fill_cart(ctx.pool, user.id, {product: 4})
        order = (await api.post(ORDERS, json={}, token=token)).json()
        path = f"{ORDERS}/{order['id']}/cancel"

        owner, staff = await asyncio.gather(
            api.post(path, token=token), api.post(path, token=admin)
        )

        assert sorted([owner.status, staff.status]) == [200, 409]
        assert await stock_of(ctx.pool, product) == 10


async def test_expiry_racing_a_cancel_restocks_once(ctx: AppContext, accounts: Accounts) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=100)
    placed = []
    for _ in range(20):
        placement = await orders.create_order(
            ctx, Principal(user.id, "customer"), explicit([(product, 1)])
        )
        assert placement.order is not None
        placed.append(placement.order.id)
    await expire_reservations(ctx.pool, placed)

    async def expire() -> int:
        async with ctx.pool.acquire() as conn:
            return await orders.cancel_expired_unpaid(conn)

    async def cancel(order_id: int) -> str:
        try:
            return (await orders.cancel_order(ctx, Principal(user.id, "customer"), order_id)).status
        except Conflict:
            return "already"

    await asyncio.gather(expire(), expire(), *(cancel(o) for o in placed))

    assert await stock_of(ctx.pool, product) == 100
    assert (
        await ctx.pool.fetchval(
            "SELECT count(*) FROM orders WHERE id = ANY($1::bigint[]) AND status = 'cancelled'",
            placed,
        )
        == 20
    )


async def test_a_promotion_limit_holds_under_concurrent_checkouts(ctx: AppContext) -> None:
    product = await create_product(ctx.pool, stock=100, price=1000)
    promotion = await create_promotion(ctx.pool, "RACE-3", value=50, usage_limit=3)
    customers = await create_customers(ctx, 30)

    async def order_with_code(user_id: int) -> int | None:
        data = {"items": [{"product_id": product, "quantity": 1}], "promotion_code": "race-3"}
        try:
            placement = await orders.create_order(
                ctx, Principal(user_id, "customer"), orders.parse_order_input(data)
            )
        except ValidationFailed:
            return None
        assert placement.order is not None
        return placement.order.discount

    discounts = await asyncio.gather(*(order_with_code(u) for u, _ in customers))

    assert sorted(d for d in discounts if d is not None) == [500, 500, 500]
    assert (
        await ctx.pool.fetchval("SELECT times_used FROM promotions WHERE id = $1", promotion) == 3
    )
    assert await stock_of(ctx.pool, product) == 97
