"""Order processing: unpaid orders past ORDER_PAYMENT_TIMEOUT are cancelled and restocked."""

from __future__ import annotations

import asyncio

import orjson

from server.context import AppContext
from server.domain.principal import Principal
from server.services import catalog, orders
from tests.orders_support import Accounts, create_product, stock_of
from workers.tasks.orders import cancel_unpaid_orders


async def place(
    ctx: AppContext,
    principal: Principal,
    items: dict[int, int],
    *,
    age_seconds: int = 0,
    status: str = "pending",
) -> int:
    placement = await orders.create_order(
        ctx,
        principal,
        orders.parse_order_input(
            {"items": [{"product_id": p, "quantity": q} for p, q in items.items()]}
        ),
    )
    assert placement.order is not None
    # As if placed `age_seconds` ago: the order and the end of its stock hold move back.
    await ctx.pool.execute(
        """UPDATE orders SET status = $2, created_at = now() - make_interval(secs => $3)
            WHERE id = $1""",
        placement.order.id,
        status,
        float(age_seconds),
    )
    await ctx.pool.execute(
        """UPDATE stock_reservations
              SET expires_at = expires_at - make_interval(secs => $2)
            WHERE order_id = $1""",
        placement.order.id,
        float(age_seconds),
    )
    return placement.order.id


async def status_of(ctx: AppContext, order_id: int) -> str:
    status: str = await ctx.pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
    return status


async def test_unpaid_orders_past_the_timeout_are_cancelled_and_restocked(ctx: AppContext) -> None:
    user, _ = await Accounts(ctx).create()
    principal = Principal(user.id, user.role)
    timeout = ctx.settings.order_payment_timeout
    product = await create_product(ctx.pool, stock=10)
    expired = await place(ctx, principal, {product: 3}, age_seconds=timeout + 60)
    fresh = await place(ctx, principal, {product: 2}, age_seconds=timeout - 60)
    paid = await place(ctx, principal, {product: 1}, age_seconds=timeout + 60, status="paid")
    _, cached = await catalog.public_product(ctx, product)
    assert orjson.loads(cached)["stock"] == 4

    assert await cancel_unpaid_orders(ctx) == 1

    assert await status_of(ctx, expired) == "cancelled"
    assert await status_of(ctx, fresh) == "pending" and await status_of(ctx, paid) == "paid"
    assert await stock_of(ctx.pool, product) == 7
    # The job retired the cached product reads: the restocked figure is served at once.
    _, cached = await catalog.public_product(ctx, product)
    assert orjson.loads(cached)["stock"] == 7
    assert await cancel_unpaid_orders(ctx) == 0


async def test_two_runs_at_once_restock_each_order_once(ctx: AppContext) -> None:
    user, _ = await Accounts(ctx).create()
    principal = Principal(user.id, user.role)
    product = await create_product(ctx.pool, stock=100)
    age = ctx.settings.order_payment_timeout + 5
    for _ in range(12):
        await place(ctx, principal, {product: 5}, age_seconds=age)
    assert await stock_of(ctx.pool, product) == 40

    counts = await asyncio.gather(cancel_unpaid_orders(ctx), cancel_unpaid_orders(ctx))

    assert sum(counts) == 12
    assert await stock_of(ctx.pool, product) == 100
