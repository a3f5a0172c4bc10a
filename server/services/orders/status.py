"""The order state machine: who may make which move; a cancellation restocks once."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from server.context import AppContext
from server.db import orders as orders_db
from server.db.orders import OrderRecord
from server.domain.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
)
from server.domain.principal import Principal
from server.services.catalog import stock_changed
from server.services.orders.model import Order, check_status, order_view
from server.services.orders.reading import visible_to

_EXPIRY_BATCH = 100

# Who may make each move. Customers reach only their own orders (see `visible_to`).
_MOVES: dict[tuple[str, str], frozenset[str]] = {
    ("pending", "paid"): frozenset({"admin", "service"}),
    ("paid", "shipped"): frozenset({"admin", "service"}),
    ("shipped", "delivered"): frozenset({"admin", "service"}),
    ("pending", "cancelled"): frozenset({"customer", "admin", "service"}),
    ("paid", "cancelled"): frozenset({"admin"}),
}


# ---- status changes ---------------------------------------------------------------------------


async def change_status(ctx: AppContext, principal: Principal, order_id: int, target: str) -> Order:
    """Move an order along the state machine; a cancellation restocks in the same transaction.

    The order row is locked first, so of two concurrent cancellations the second waits, then
    sees `cancelled` and is refused: the stock comes back exactly once.
    """
    target = check_status(target)
    if target != "cancelled" and not principal.is_staff:
        raise PermissionDenied("only admins and services may change an order's status")
    async with ctx.pool.acquire() as conn, conn.transaction():
        order = await orders_db.get_order(conn, order_id, for_update=True)
        if order is None or not visible_to(principal, order):
            raise NotFound(f"order {order_id} not found")
        allowed = _MOVES.get((order.status, target))
        if allowed is None:
            raise Conflict(f"an order that is {order.status} cannot become {target}")
        if principal.role not in allowed:
            raise Conflict(
                f"a {order.status} order can be made {target} only by "
                + " or ".join(sorted(r for r in allowed if r != "customer"))
            )
        if target == "cancelled":
            await _give_back([order], conn)
        changed = order_view(await orders_db.set_status(conn, order, target))
    if target == "cancelled":  # restocked: the products' cached pages retire
        await stock_changed(ctx, (item.product_id for item in order.items))
    return changed


async def cancel_order(ctx: AppContext, principal: Principal, order_id: int) -> Order:
    """Owner: while pending. Admin: while pending or paid. Restocks."""
    return await change_status(ctx, principal, order_id, "cancelled")


async def _give_back(orders: Sequence[OrderRecord], conn: asyncpg.Connection) -> None:
    quantities: dict[int, int] = {}
    for order in orders:
        for item in order.items:
            quantities[item.product_id] = quantities.get(item.product_id, 0) + item.quantity
    await orders_db.restock(conn, quantities)
    await orders_db.add_units_sold(conn, {p: -q for p, q in quantities.items()})


async def cancel_expired_unpaid(
    conn: asyncpg.Connection, older_than_seconds: float, restocked: set[int] | None = None
) -> int:
    """Cancel and restock pending orders older than the payment timeout; the count cancelled.
    The ids of the products given back are added to `restocked` (for the caller to retire
    their cached pages once the batches have committed).

    Works in batches, each its own transaction. Rows another run holds are skipped (SKIP
    LOCKED), and a cancel racing with a payment waits on the row lock, so two runs at once (or
    a run and a user's cancel) never restock an order twice.
    """
    cancelled = 0
    while True:
        async with conn.transaction():
            batch = await orders_db.lock_expired_pending(conn, older_than_seconds, _EXPIRY_BATCH)
            if not batch:
                return cancelled
            await _give_back(batch, conn)
            await orders_db.mark_cancelled(conn, [o.id for o in batch])
        if restocked is not None:
            restocked.update(item.product_id for order in batch for item in order.items)
        cancelled += len(batch)
        if len(batch) < _EXPIRY_BATCH:
            return cancelled
