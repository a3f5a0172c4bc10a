"""SIGTERM in the middle of a checkout burst against a real `storefront serve` process.

Every checkout either committed (its order exists, its stock was taken, its cart emptied) or
never started (no order, stock and cart untouched): the drain lets in-flight checkouts finish,
and what arrives after the signal is refused at the door. Every 201 the clients saw is in the
database; stock adds up.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from server.context import AppContext
from tests.conftest import BASE_ENV, ApiClient, UserFactory
from tests.integration.test_serve import _start
from tests.orders_support import cart_size, create_product, fill_cart, stock_of

pytestmark = pytest.mark.chaos

SHOPPERS = 40
STOCK = 1_000


async def test_sigterm_during_a_checkout_burst_loses_nothing(
    database_url: str, ctx: AppContext
) -> None:
    products = [await create_product(ctx.pool, stock=STOCK) for _ in range(3)]
    users = UserFactory(ctx)
    shoppers = [await users.create() for _ in range(SHOPPERS)]
    carts = {}
    for n, (user, _) in enumerate(shoppers):
        carts[user.id] = {products[n % 3]: 1 + n % 2, products[(n + 1) % 3]: 1}
        await fill_cart(ctx.pool, user.id, carts[user.id])

    server = await _start({**os.environ, **BASE_ENV, "DATABASE_URL": database_url})
    api = ApiClient(f"http://127.0.0.1:{server.http_port}")

    async def checkout(user_id: int, token: str) -> int:
        try:
            response = await api.post(
                "/api/v1/orders",
                json={},
                token=token,
                headers={"Idempotency-Key": f"burst-{user_id}"},
                timeout=20,
            )
        except Exception:
            return 0  # refused or cut: must then never have started
        return response.status

    first_wave = [asyncio.create_task(checkout(u.id, t)) for u, t in shoppers[: SHOPPERS // 2]]
    await asyncio.sleep(0.05)
    server.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    second_wave = [asyncio.create_task(checkout(u.id, t)) for u, t in shoppers[SHOPPERS // 2 :]]
    statuses = await asyncio.gather(*first_wave, *second_wave)
    code = await asyncio.wait_for(server.process.wait(), 30)
    api.close()

    assert code == 0
    assert set(statuses) <= {0, 201, 503}, statuses
    assert statuses.count(201) > 0, "the signal came before any checkout could finish"
    ordered = {
        r["user_id"]: r["id"] for r in await ctx.pool.fetch("SELECT id, user_id FROM orders")
    }
    sold: dict[int, int] = {p: 0 for p in products}
    for (user, _), status in zip(shoppers, statuses, strict=True):
        if status == 201:
            assert user.id in ordered, "a 201 the client saw is not in the database"
        if user.id in ordered:  # committed: the cart went with it
            assert await cart_size(ctx.pool, user.id) == 0
            for product, quantity in carts[user.id].items():
                sold[product] += quantity
        else:  # never started: the cart is as it was
            assert await cart_size(ctx.pool, user.id) == len(carts[user.id])
    for product in products:
        stock = await stock_of(ctx.pool, product)
        assert stock == STOCK - sold[product]
    items = await ctx.pool.fetchval("SELECT count(*) FROM order_items")
    assert items == sum(len(carts[u]) for u in ordered)
