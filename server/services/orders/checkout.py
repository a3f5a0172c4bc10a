"""Checkout (`place_order`), in ONE transaction: take the stock of each line's variant with a
conditional UPDATE in ascending variant id (never below zero; writers never deadlock), price
the taken rows with the Rust engine, count the promotion use against its limit, write the order
and its item snapshots, hold the units as the order's stock reservation until it is paid (or
ORDER_PAYMENT_TIMEOUT passes), count units sold, and write the outbox e-mails. Any refusal
rolls all of it back, so an order exists exactly when its stock was taken."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec

from server.config import Settings
from server.context import AppContext
from server.db import idempotency as idempotency_db
from server.db import orders as orders_db
from server.db import promotions as promotions_db
from server.db import variants as variants_db
from server.db.orders import OrderRecord
from server.db.variants import StockLevel, TakenVariant, VariantRecord
from server.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from server.domain.lines import CartLine, OrderItem
from server.domain.principal import Principal
from server.services import events
from server.services.cart import load_cart_lines
from server.services.catalog_cache import stock_changed
from server.services.orders.idempotency import (
    PLACED,
    IdempotencyKey,
    Placement,
    refusal_code,
    refusal_record,
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
from server.services.orders.notifications import low_stock, order_mails
from server.services.orders.status import announce_order, announce_stock
from server.services.pricing import PricedCart, price_lines
from server.services.stock_alerts import emit_alerts
from server.services.variants import Choice, choose_or_miss

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
    unavailable: Sequence[FieldError] = (),
    cart_promotion: bool = False,
) -> OrderRecord:
    """Place an order for `lines` (variant_id, quantity; distinct variants) inside the caller's
    transaction; `unavailable` names lines that could not even be resolved to a variant (the
    order is then refused with every short line named). Raises (and the caller's rollback
    undoes everything) when it cannot.

    Lines are priced in the order given (a fixed discount's odd unit lands on the same line as
    in the cart the customer saw). `cart_promotion`: the code is the one attached to the cart,
    which applies it only while it is usable (GET /cart then shows `promotion_code: null`), so
    an expired, deleted, used-up or below-minimum code places the order without it, as shown;
    a code the caller names (gRPC CreateOrder) is refused instead. A code used up by a
    concurrent checkout between the two is refused either way: the customer saw a discount."""
    if not conn.is_in_transaction():
        raise RuntimeError("place_order must run inside a transaction")
    if not lines and not unavailable:
        raise ValidationFailed(
            "the cart is empty; add items before checking out",
            errors=[FieldError("items", "at least one item is required")],
        )
    now = now or datetime.now(UTC)
    try:
        promotion = await _usable_promotion(conn, promotion_code, now)
    except ValidationFailed:
        if not cart_promotion:
            raise
        promotion = None  # the cart does not apply it either
    taken = await _take_stock(conn, lines, list(unavailable))
    position = {variant_id: index for index, (variant_id, _) in enumerate(lines)}
    taken.sort(
        key=lambda t: position[t.variant_id]
    )  # taken in variant order (locks); priced as given
    quantities = dict(lines)
    cart_lines = [
        CartLine(
            t.product_id,
            t.sku,
            t.name,
            t.category_id,
            t.price,
            quantities[t.variant_id],
            t.variant_id,
            t.options,
        )
        for t in taken
    ]

    def priced_with(chosen: promotions_db.Promotion | None) -> PricedCart:
        return price_lines(
            cart_lines,
            chosen,
            tax_rate_bps=settings.tax_rate_bps,
            currency=settings.store_currency,
        )

    priced = priced_with(promotion)
    if promotion is not None and priced.below_minimum and cart_promotion:
        promotion = None  # below its minimum: the cart shows it unapplied
        priced = priced_with(None)
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
            items=[OrderItem.of(p) for p in priced.lines],
        ),
    )
    reserved_until = await orders_db.hold_stock(
        conn, order.id, quantities, settings.order_payment_timeout
    )
    order = msgspec.structs.replace(order, reserved_until=reserved_until)
    sold: dict[int, int] = {}
    for t in taken:
        sold[t.product_id] = sold.get(t.product_id, 0) + quantities[t.variant_id]
    await orders_db.add_units_sold(conn, sold)
    await orders_db.enqueue_mail(conn, await order_mails(conn, settings, order, taken, quantities))
    await announce_order(conn, "order.created", order)
    announce_stock([StockLevel(t.product_id, t.variant_id, t.stock_after) for t in taken])
    await emit_alerts(conn, settings, low_stock(settings, taken, quantities))
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
    conn: asyncpg.Connection, lines: Sequence[tuple[int, int]], unavailable: list[FieldError]
) -> list[TakenVariant]:
    """Take every line's units (one statement, rows locked in ascending variant id); Conflict
    naming each short line, and the `unavailable` ones (lines whose product is gone) with them.

    With an unavailable line nothing is taken (the transaction is lost anyway) and the lines
    are only read, so the 409 can name every line that is short.
    """
    ordered = sorted(lines)
    if unavailable:
        short, rest = [], ordered
    else:
        taken = await variants_db.take_stock(conn, ordered)
        if len(taken) == len(ordered):
            return taken
        got = {t.variant_id for t in taken}
        short = [(v, q) for v, q in ordered if v not in got]  # each failed the take itself
        rest = []
    current = await variants_db.get_variants(conn, [v for v, _ in short + rest])
    short += [
        (v, q)
        for v, q in rest
        if v not in current or not current[v].sellable or current[v].stock < q
    ]
    field_errors = []
    for variant_id, quantity in short:
        state = current.get(variant_id)
        if state is None or not state.sellable:
            message, in_stock = "this product is no longer available", 0
        else:
            message, in_stock = f"requested {quantity}, only {state.stock} in stock", state.stock
        facts = {"variant_id": variant_id, "requested": quantity, "available": in_stock}
        if state is not None:
            facts["product_id"] = state.product_id
        field_errors.append(FieldError(f"items.{variant_id}", message, facts))
    raise Conflict("not enough stock for some items", errors=[*field_errors, *unavailable])


PlaceInTransaction = Callable[[asyncpg.Connection], Awaitable[OrderRecord]]


def _lease_lost() -> Unavailable:
    """A checkout that outlived its key's lease (IDEMPOTENCY_LEASE) while another request with
    the same key took the claim over: it must not commit a second order."""
    return Unavailable(
        "this checkout took longer than its Idempotency-Key's lease; retry with the same key",
        retry_after=1,
    )


async def _run_checkout(
    ctx: AppContext, user_id: int, request: IdempotencyKey | None, place: PlaceInTransaction
) -> Placement:
    pool = ctx.pool
    if request is None:
        async with events.collecting(ctx), pool.acquire() as conn, conn.transaction():
            order = order_view(await place(conn))
        await _after_checkout(ctx, order)
        return Placement(False, order, msgspec.json.encode(order))

    held = await idempotency_db.claim(
        pool,
        user_id,
        request.key,
        request.request_hash,
        ttl_seconds=IDEMPOTENCY_TTL,
        lease_seconds=IDEMPOTENCY_LEASE,
    )
    if isinstance(held, idempotency_db.StoredKey):
        return stored_answer(held, request)
    try:
        async with events.collecting(ctx), pool.acquire() as conn, conn.transaction():
            order = order_view(await place(conn))
            body = msgspec.json.encode(order)
            if not await idempotency_db.complete(conn, user_id, request.key, held, PLACED, body):
                raise _lease_lost()  # rolls the order back: the request that took over places it
    except DomainError as error:
        code = refusal_code(error)
        if code is None:
            await idempotency_db.release(pool, user_id, request.key, held)
        else:
            record = refusal_record(error)
            await idempotency_db.complete(pool, user_id, request.key, held, code, record)
        raise
    except BaseException:
        await idempotency_db.release(pool, user_id, request.key, held)
        raise
    await _after_checkout(ctx, order)
    return Placement(False, order, body)


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
            lines=[(line.variant_id, line.quantity) for line in lines],
            promotion_code=promotion_code,
            details=details,
            cart_promotion=True,
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

    async def place(conn: asyncpg.Connection) -> OrderRecord:
        lines, unavailable = await _order_lines(conn, order_input)
        return await place_order(
            conn,
            ctx.settings,
            user_id=principal.user_id,
            lines=lines,
            promotion_code=order_input.promotion_code,
            details=details,
            unavailable=unavailable,
        )

    return await _run_checkout(ctx, principal.user_id, idempotency, place)


async def _order_lines(
    conn: asyncpg.Connection, order_input: OrderInput
) -> tuple[list[tuple[int, int]], list[FieldError]]:
    """(variant_id, quantity) of explicit items. A product or variant that is unknown or not
    for sale is a short line (409 like stock, named `items[<index>]` since it may have no
    variant to name), a mismatch or ambiguity a 422."""
    choices = [Choice(i.product_id, i.variant_id, i.options or None) for i in order_input.items]
    chosen = await choose_or_miss(conn, choices, field_prefix="items")
    missing = [
        FieldError(
            f"items[{index}]",
            "this product is no longer available",
            {"requested": line.quantity, "available": 0},
        )
        for index, (line, result) in enumerate(zip(order_input.items, chosen, strict=True))
        if isinstance(result, NotFound)
    ]
    seen: set[int] = set()
    for index, variant in enumerate(chosen):
        if not isinstance(variant, VariantRecord):
            continue
        if variant.id in seen:
            raise ValidationFailed(
                "the order is invalid",
                errors=[FieldError(f"items[{index}]", "each variant may appear only once")],
            )
        seen.add(variant.id)
    lines = [
        (v.id, i.quantity)
        for v, i in zip(chosen, order_input.items, strict=True)
        if isinstance(v, VariantRecord)
    ]
    return lines, missing
