"""Checkout (`place_order`), in ONE transaction: take the stock of each line with a conditional
UPDATE in ascending product id (never below zero; writers never deadlock), price the taken rows
with the Rust engine, count the promotion use against its limit, write the order and its item
snapshots, count units sold, and write the outbox e-mails. Any refusal rolls all of it back, so
an order exists exactly when its stock was taken."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec
import orjson

from server.config import Settings
from server.context import AppContext
from server.db import idempotency as idempotency_db
from server.db import orders as orders_db
from server.db import promotions as promotions_db
from server.db.orders import OrderItemRecord, OrderRecord, TakenStock
from server.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    ValidationFailed,
)
from server.domain.lines import CartLine
from server.domain.principal import Principal
from server.services.cart import load_cart_lines
from server.services.catalog import stock_changed
from server.services.orders.idempotency import (
    IdempotencyKey,
    Placement,
    problem_document,
    replayable_status,
    stored_answer,
)
from server.services.orders.model import (
    IDEMPOTENCY_LEASE,
    IDEMPOTENCY_TTL,
    Order,
    OrderDetails,
    OrderInput,
    order_view,
)
from server.services.orders.notifications import order_mails
from server.services.pricing import price_lines

# ---- checkout ---------------------------------------------------------------------------------


async def place_order(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    user_id: int,
    lines: Sequence[tuple[int, int]],
    promotion_code: str | None,
    details: OrderDetails,
    now: datetime | None = None,
) -> OrderRecord:
    """Place an order for `lines` (product_id, quantity; distinct products) inside the caller's
    transaction. Raises (and the caller's rollback undoes everything) when it cannot."""
    if not conn.is_in_transaction():
        raise RuntimeError("place_order must run inside a transaction")
    if not lines:
        raise ValidationFailed(
            "the cart is empty; add items before checking out",
            errors=[FieldError("items", "at least one item is required")],
        )
    now = now or datetime.now(UTC)
    promotion = await _usable_promotion(conn, promotion_code, now)
    taken = await _take_stock(conn, lines)
    quantities = dict(lines)
    priced = price_lines(
        [
            CartLine(t.product_id, t.sku, t.name, t.category_id, t.price, quantities[t.product_id])
            for t in taken
        ],
        promotion,
        tax_rate_bps=settings.tax_rate_bps,
        currency=settings.store_currency,
    )
    if promotion is not None:
        if priced.below_minimum:
            raise ValidationFailed(
                f"promotion {promotion.code!r} needs a subtotal of at least "
                f"{promotion.min_subtotal}",
                errors=[FieldError("promotion_code", "minimum subtotal not reached")],
            )
        if not await orders_db.count_promotion_use(conn, promotion.id):
            raise ValidationFailed(
                f"promotion {promotion.code!r} has been used up",
                errors=[FieldError("promotion_code", "used up")],
            )
    order = await orders_db.insert_order(
        conn,
        orders_db.NewOrder(
            user_id=user_id,
            subtotal=priced.subtotal,
            discount=priced.discount,
            tax=priced.tax,
            total=priced.total,
            currency=priced.currency,
            promotion_code=priced.promotion_code,
            shipping_address=msgspec.to_builtins(details.shipping_address)
            if details.shipping_address is not None
            else None,
            note=details.note,
            items=[
                OrderItemRecord(p.product_id, p.sku, p.name, p.quantity, p.unit_price, p.line_total)
                for p in priced.lines
            ],
        ),
    )
    await orders_db.add_units_sold(conn, quantities)
    await orders_db.enqueue_mail(conn, await order_mails(conn, settings, order, taken, quantities))
    return order


async def _usable_promotion(
    conn: asyncpg.Connection, code: str | None, now: datetime
) -> promotions_db.Promotion | None:
    if code is None:
        return None
    promotion = await promotions_db.get_by_code(conn, code)
    if promotion is None:
        raise ValidationFailed(
            f"promotion {code!r} does not exist",
            errors=[FieldError("promotion_code", "unknown promotion code")],
        )
    reason = promotion.unusable_reason(now)
    if reason is not None:
        raise ValidationFailed(reason, errors=[FieldError("promotion_code", reason)])
    return promotion


async def _take_stock(
    conn: asyncpg.Connection, lines: Sequence[tuple[int, int]]
) -> list[TakenStock]:
    """Take every line's units in ascending product id; Conflict naming each short line.

    After the first short line nothing more is taken (the transaction is lost anyway); the
    remaining lines are only read, so the 409 can name every line that is short.
    """
    taken: list[TakenStock] = []
    short: list[tuple[int, int]] = []
    ordered = sorted(lines)
    for product_id, quantity in ordered:
        if short:
            break
        row = await orders_db.take_stock(conn, product_id, quantity)
        if row is None:
            short.append((product_id, quantity))
        else:
            taken.append(row)
    if not short:
        return taken
    rest = ordered[len(taken) + 1 :]
    available = await orders_db.availability(conn, [p for p, _ in short + rest])
    short += [
        (p, q)
        for p, q in rest
        if p not in available or not available[p].is_active or available[p].stock < q
    ]
    field_errors = []
    for product_id, quantity in short:
        state = available.get(product_id)
        if state is None or not state.is_active:
            message, in_stock = "this product is no longer available", 0
        else:
            message, in_stock = f"requested {quantity}, only {state.stock} in stock", state.stock
        facts = {"product_id": product_id, "requested": quantity, "available": in_stock}
        field_errors.append(FieldError(f"items.{product_id}", message, facts))
    raise Conflict("not enough stock for some items", errors=field_errors)


PlaceInTransaction = Callable[[asyncpg.Connection], Awaitable[OrderRecord]]


async def _run_checkout(
    ctx: AppContext, user_id: int, request: IdempotencyKey | None, place: PlaceInTransaction
) -> Placement:
    pool = ctx.pool
    if request is None:
        async with pool.acquire() as conn, conn.transaction():
            order = order_view(await place(conn))
        await _after_checkout(ctx, order)
        return Placement(201, msgspec.json.encode(order), False, order)

    held = await idempotency_db.claim(
        pool,
        user_id,
        request.key,
        request.request_hash,
        ttl_seconds=IDEMPOTENCY_TTL,
        lease_seconds=IDEMPOTENCY_LEASE,
    )
    if held is not None:
        return stored_answer(held, request)
    try:
        async with pool.acquire() as conn, conn.transaction():
            order = order_view(await place(conn))
            body = msgspec.json.encode(order)
            await idempotency_db.complete(conn, user_id, request.key, 201, body)
    except DomainError as error:
        status = replayable_status(error)
        if status is None:
            await idempotency_db.release(pool, user_id, request.key)
        else:
            await idempotency_db.complete(
                pool, user_id, request.key, status, orjson.dumps(problem_document(status, error))
            )
        raise
    except BaseException:
        await idempotency_db.release(pool, user_id, request.key)
        raise
    await _after_checkout(ctx, order)
    return Placement(201, body, False, order)


async def _after_checkout(ctx: AppContext, order: Order) -> None:
    """After the commit: stock moved (the sold products' cached pages retire, nothing else) and
    the confirmation and any low-stock alerts wait in the outbox (delivered now; the 15-minute
    job is the net)."""
    await stock_changed(ctx, (item.product_id for item in order.items))
    if ctx.jobs is not None:
        await ctx.jobs.deliver_outbox()


async def checkout_cart(
    ctx: AppContext,
    principal: Principal,
    details: OrderDetails,
    idempotency: IdempotencyKey | None = None,
) -> Placement:
    """Order the caller's cart (with its promotion code) and empty the cart (REST checkout)."""

    async def place(conn: asyncpg.Connection) -> OrderRecord:
        await orders_db.lock_cart(conn, principal.user_id)
        # The lines GET /cart shows (inactive products are left out, as there).
        lines, promotion_code = await load_cart_lines(conn, principal.user_id)
        order = await place_order(
            conn,
            ctx.settings,
            user_id=principal.user_id,
            lines=[(line.product_id, line.quantity) for line in lines],
            promotion_code=promotion_code,
            details=details,
        )
        await orders_db.empty_cart(conn, principal.user_id)
        return order

    return await _run_checkout(ctx, principal.user_id, idempotency, place)


async def create_order(
    ctx: AppContext,
    principal: Principal,
    order_input: OrderInput,
    idempotency: IdempotencyKey | None = None,
) -> Placement:
    """Order explicit items for the caller (gRPC CreateOrder); the cart is left alone."""
    details = OrderDetails(order_input.shipping_address, order_input.note)
    lines = [(line.product_id, line.quantity) for line in order_input.items]

    async def place(conn: asyncpg.Connection) -> OrderRecord:
        return await place_order(
            conn,
            ctx.settings,
            user_id=principal.user_id,
            lines=lines,
            promotion_code=order_input.promotion_code,
            details=details,
        )

    return await _run_checkout(ctx, principal.user_id, idempotency, place)
