"""The order state machine: who may make which move; a cancellation restocks once.

Stock: checkout holds the order's units (stock_reservations, `held`) until it is paid; a move
to `paid` commits them, a cancellation releases them back on sale, and so does the expiry job
for pending orders whose hold ran out (ORDER_PAYMENT_TIMEOUT).

Payments (services/payments) drive `pending → paid` (capture) and `→ refunded` (a full
refund) themselves. A paid order whose payment was captured through the gateway cannot just be
cancelled (the money would stay taken): refund it, which can restock. An authorised (not yet
captured) payment is voided by the payments service before its order is cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from server.context import AppContext
from server.db import orders as orders_db
from server.db import payments as payments_db
from server.db import variants as variants_db
from server.db.orders import OrderRecord
from server.domain.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
)
from server.domain.principal import Principal
from server.services import events
from server.services.catalog_cache import stock_changed
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
    async with events.collecting(ctx), ctx.pool.acquire() as conn, conn.transaction():
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
        if target == "paid":
            await _no_payment_under_way(conn, order)
        changed = order_view(await apply_move(conn, order, target))
    if target == "cancelled":  # restocked: the products' cached pages retire
        await stock_changed(ctx, (item.product_id for item in order.items))
    return changed


_CANNOT_CANCEL = {
    "pending": "a payment of this order is in progress; try again once the provider answers",
    "authorized": "this order's payment is authorised: void it (POST /payments/{id}/void), "
    "which cancels the order",
    "captured": "this order's payment was captured: refund it instead "
    "(POST /orders/{id}/refunds, which can restock)",
    "partially_refunded": "this order's payment was captured: refund the rest instead",
    "refunded": "this order was refunded",
}


async def _no_payment_under_way(conn: asyncpg.Connection, order: OrderRecord) -> None:
    """Staff mark an order paid when the money came another way; not while a payment of it is
    pending or authorised, which its capture makes paid (a void of it would otherwise leave a
    paid order with nothing captured)."""
    payment = await payments_db.live_payment(conn, order.id)
    if payment is not None and payment.status in ("pending", "authorized"):
        raise Conflict(
            f"this order's payment {payment.id} is {payment.status}: capture it "
            f"(POST /payments/{payment.id}/capture) or void it, rather than marking it paid"
        )


async def apply_move(conn: asyncpg.Connection, order: OrderRecord, target: str) -> OrderRecord:
    """Make an allowed move on a locked order, with what its stock and payment need."""
    if target == "cancelled":
        payment = await payments_db.live_payment(conn, order.id)
        if payment is not None:
            raise Conflict(_CANNOT_CANCEL[payment.status])
        await _give_back([order], conn)
    elif target == "paid":
        await orders_db.commit_reservations(conn, order.id)
    moved = await orders_db.set_status(conn, order, target)
    await announce_order(conn, f"order.{target}", moved)
    return moved


async def announce_order(conn: asyncpg.Connection, event_type: str, order: OrderRecord) -> None:
    """The order event for webhooks, and its owner's live stream."""
    await events.emit(
        conn,
        event_type,
        msgspec.to_builtins(order_view(order)),
        live=[events.order_topic(order.user_id)],
    )


def announce_stock(levels: Sequence[variants_db.StockLevel]) -> None:
    for level in levels:
        events.announce(
            events.product_topic(level.product_id),
            "stock.changed",
            {"product_id": level.product_id, "variant_id": level.variant_id, "stock": level.stock},
        )


async def cancel_order(ctx: AppContext, principal: Principal, order_id: int) -> Order:
    """Owner: while pending. Admin: while pending or paid. Restocks."""
    return await change_status(ctx, principal, order_id, "cancelled")


async def _give_back(orders: Sequence[OrderRecord], conn: asyncpg.Connection) -> None:
    """Release the orders' reservations and put their units back on sale (minus what refunds
    restocked already), and take them out of units sold."""
    units: dict[int, int] = {}
    sold: dict[int, int] = {}
    for order in orders:
        product_of = {item.variant_id: item.product_id for item in order.items}
        for variant_id, quantity in (await orders_db.release_reservations(conn, order.id)).items():
            units[variant_id] = units.get(variant_id, 0) + quantity
            product_id = product_of[variant_id]
            sold[product_id] = sold.get(product_id, 0) - quantity
    announce_stock(await variants_db.restock(conn, units))
    await orders_db.add_units_sold(conn, sold)


async def cancel_expired_unpaid(conn: asyncpg.Connection, restocked: set[int] | None = None) -> int:
    """Cancel and restock pending orders whose stock reservation expired (ORDER_PAYMENT_TIMEOUT
    after checkout) and that have no payment under way; the count cancelled.
    The ids of the products given back are added to `restocked` (for the caller to retire
    their cached pages once the batches have committed).

    Works in batches, each its own transaction. Rows another run holds are skipped (SKIP
    LOCKED), and a cancel racing with a payment waits on the row lock, so two runs at once (or
    a run and a user's cancel) never restock an order twice.
    """
    cancelled = 0
    while True:
        async with conn.transaction():
            batch = await orders_db.lock_expired_pending(conn, _EXPIRY_BATCH)
            if not batch:
                return cancelled
            await payments_db.abandon_pending(conn, [o.id for o in batch])
            await _give_back(batch, conn)
            await orders_db.mark_cancelled(conn, [o.id for o in batch])
            for order in batch:
                await announce_order(
                    conn, "order.cancelled", msgspec.structs.replace(order, status="cancelled")
                )
        if restocked is not None:
            restocked.update(item.product_id for order in batch for item in order.items)
        cancelled += len(batch)
        if len(batch) < _EXPIRY_BATCH:
            return cancelled
