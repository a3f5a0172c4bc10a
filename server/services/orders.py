"""Orders: checkout, idempotency, the order state machine and expiry — every order rule, once.

REST and gRPC both come through here, so they cannot disagree about who may see an order, what
a checkout takes from stock, or which status moves are legal.

Checkout (`place_order`), in ONE transaction: take the stock of each line with a conditional
UPDATE in ascending product id (never below zero; writers never deadlock), price the taken rows
with the Rust engine, count the promotion use against its limit, write the order and its item
snapshots, count units sold, and write the outbox e-mails. Any refusal rolls all of it back, so
an order exists exactly when its stock was taken.

Idempotency (`Idempotency-Key` / `idempotency_key`): the key is claimed in its own short
transaction before the checkout starts. The answer is stored with the key: a placed order in the
same transaction as the order itself (both or neither), a refusal the checkout decided on
(409 short stock, 422 empty cart or unusable promotion, ...) right after its rollback, so a retry
with the same key answers exactly as the first request did, as the contract asks ("a replay
returns the first response"). A client that fixed the cause sends a new key. Anything that is not
an answer (a crash, a lost database connection, a cancelled call) releases the claim instead, so
the client may retry with the same key; nothing was committed in that case.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
import orjson

from server.config import Settings
from server.context import AppContext
from server.db import idempotency as idempotency_db
from server.db import orders as orders_db
from server.db import promotions as promotions_db
from server.db.orders import Mail, OrderItemRecord, OrderRecord, TakenStock
from server.domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    FieldError,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from server.domain.lines import CartLine
from server.domain.principal import Principal
from server.services.cart import load_cart_lines
from server.services.catalog import stock_changed
from server.services.pricing import price_lines

OrderStatus = Literal["pending", "paid", "shipped", "delivered", "cancelled"]
ORDER_STATUSES: tuple[OrderStatus, ...] = ("pending", "paid", "shipped", "delivered", "cancelled")

MAX_NOTE = 500
MAX_LINES = 100
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_TTL = 24 * 3600
# An in-flight claim older than this belongs to a request that died without releasing it.
IDEMPOTENCY_LEASE = 300
DEFAULT_PAGE = 20
MAX_PAGE = 100
_EXPIRY_BATCH = 100
_CURSOR_PREFIX = b"orders:"

# Who may make each move. Customers reach only their own orders (see `_visible`).
_MOVES: dict[tuple[str, str], frozenset[str]] = {
    ("pending", "paid"): frozenset({"admin", "service"}),
    ("paid", "shipped"): frozenset({"admin", "service"}),
    ("shipped", "delivered"): frozenset({"admin", "service"}),
    ("pending", "cancelled"): frozenset({"customer", "admin", "service"}),
    ("paid", "cancelled"): frozenset({"admin"}),
}


# ---- inputs (also the REST body schemas, so both edges validate alike) ------------------------


class ShippingAddress(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    line1: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    city: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    country: Annotated[str, msgspec.Meta(min_length=2, max_length=100)]
    line2: Annotated[str, msgspec.Meta(max_length=200)] | None = None


Note = Annotated[str, msgspec.Meta(max_length=MAX_NOTE)]


class OrderDetails(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a checkout adds to the goods: where to ship, and a note for the shop."""

    shipping_address: ShippingAddress | None = None
    note: Note | None = None


class OrderLine(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    product_id: Annotated[int, msgspec.Meta(ge=1)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=999)]


class OrderInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An order of explicit items (gRPC CreateOrder)."""

    items: Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_LINES)]
    promotion_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    shipping_address: ShippingAddress | None = None
    note: Note | None = None


def parse_order_input(data: dict[str, Any]) -> OrderInput:
    """Validate a decoded request against `OrderInput` (422 with the failing field)."""
    try:
        order_input = msgspec.convert(data, OrderInput)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        field = where.rstrip("`").lstrip(".") or "body"
        raise ValidationFailed(
            "the order is invalid", errors=[FieldError(field, message)]
        ) from None
    seen: set[int] = set()
    for index, line in enumerate(order_input.items):
        if line.product_id in seen:
            raise ValidationFailed(
                "the order is invalid",
                errors=[
                    FieldError(f"items[{index}].product_id", "each product may appear only once")
                ],
            )
        seen.add(line.product_id)
    return order_input


# ---- the order as the contract shows it (REST body, gRPC source, stored idempotent answer) ----


class OrderItem(msgspec.Struct, frozen=True):
    product_id: int
    sku: str
    name: str
    quantity: int
    unit_price: int  # snapshot of the product's price when the order was placed
    line_total: int  # after the line's share of the discount, before tax


class Order(msgspec.Struct, frozen=True):
    id: int
    user_id: int
    status: OrderStatus
    items: list[OrderItem]
    subtotal: int
    discount: int
    tax: int
    total: int
    currency: str
    promotion_code: str | None
    shipping_address: ShippingAddress | None
    note: str | None
    created_at: datetime
    updated_at: datetime


class OrderPage(msgspec.Struct, frozen=True):
    items: list[Order]
    next_cursor: str | None


def order_view(order: OrderRecord) -> Order:
    return Order(
        id=order.id,
        user_id=order.user_id,
        status=check_status(order.status),
        items=[
            OrderItem(i.product_id, i.sku, i.name, i.quantity, i.unit_price, i.line_total)
            for i in order.items
        ],
        subtotal=order.subtotal,
        discount=order.discount,
        tax=order.tax,
        total=order.total,
        currency=order.currency,
        promotion_code=order.promotion_code,
        shipping_address=msgspec.convert(order.shipping_address, ShippingAddress)
        if order.shipping_address is not None
        else None,
        note=order.note,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


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
    await orders_db.enqueue_mail(conn, await _order_mails(conn, settings, order, taken, quantities))
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


def _money(amount: int, currency: str) -> str:
    digits = {
        "JPY": 0,
        "KRW": 0,
        "VND": 0,
        "CLP": 0,
        "ISK": 0,
        "BHD": 3,
        "KWD": 3,
        "JOD": 3,
        "OMR": 3,
        "TND": 3,
    }.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    if not digits:
        return f"{sign}{whole} {currency}"
    return f"{sign}{whole}.{fraction:0{digits}d} {currency}"


async def _order_mails(
    conn: asyncpg.Connection,
    settings: Settings,
    order: OrderRecord,
    taken: list[TakenStock],
    quantities: dict[int, int],
) -> list[Mail]:
    mails: list[Mail] = []
    email = await orders_db.email_of(conn, order.user_id)
    if email:
        lines = "\n".join(
            f"  {i.quantity} x {i.name} ({i.sku})  {_money(i.line_total, order.currency)}"
            for i in order.items
        )
        body = (
            f"Thank you for your order #{order.id}.\n\n{lines}\n\n"
            f"Subtotal: {_money(order.subtotal, order.currency)}\n"
            f"Discount: {_money(order.discount, order.currency)}\n"
            f"Tax:      {_money(order.tax, order.currency)}\n"
            f"Total:    {_money(order.total, order.currency)}\n"
        )
        mails.append(
            Mail(
                "order_confirmation",
                email,
                f"Your order #{order.id}",
                body,
                f"order_confirmation:{order.id}",
            )
        )
    threshold = settings.low_stock_threshold
    crossed = [
        t for t in taken if t.stock_after < threshold <= t.stock_after + quantities[t.product_id]
    ]
    if crossed:
        recipients = await orders_db.admin_emails(conn) or [settings.mail_from]
        for product in crossed:
            subject = f"Low stock: {product.name} ({product.sku})"
            body = (
                f"Product #{product.product_id} {product.name} ({product.sku}) has "
                f"{product.stock_after} left in stock (threshold {threshold}) after "
                f"order #{order.id}.\n"
            )
            for recipient in recipients:
                mails.append(
                    Mail(
                        "low_stock",
                        recipient,
                        subject,
                        body,
                        f"low_stock:{product.product_id}:{order.id}:{recipient}",
                    )
                )
    return mails


# ---- idempotency ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    request_hash: str


def idempotency_key(key: str | None, method: str, path: str, body: Any) -> IdempotencyKey | None:
    """The key and the request's fingerprint: sha256 of method, path and the canonical body.

    `body` is the validated request as builtins, so formatting, key order and explicit nulls
    of the JSON do not change the fingerprint.
    """
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationFailed(
            "the Idempotency-Key is invalid",
            errors=[
                FieldError("Idempotency-Key", f"1 to {MAX_IDEMPOTENCY_KEY} printable characters")
            ],
        )
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(method.upper().encode() + b" " + path.encode() + b"\n" + canonical)
    return IdempotencyKey(key, digest.hexdigest())


@dataclass(frozen=True, slots=True)
class Placement:
    """The answer to a checkout: a fresh order, or the stored answer of an earlier request."""

    status: int
    body: bytes  # the order document, or a problem document when a replayed refusal
    replayed: bool
    order: Order | None
    error: DomainError | None = None


_REPLAYABLE: tuple[tuple[type[DomainError], int], ...] = (
    (Conflict, 409),
    (NotFound, 404),
    (ValidationFailed, 422),
    (BadRequest, 400),
)
_ERROR_OF_STATUS: dict[int, type[DomainError]] = {s: cls for cls, s in _REPLAYABLE}


def problem_document(status: int, error: DomainError) -> dict[str, Any]:
    """The problem+json body REST answers with (mirrors server.http.base.problem)."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": error.detail or title,
    }
    if error.errors:
        body["errors"] = [e.as_problem() for e in error.errors]
    return body


def _replayable_status(error: DomainError) -> int | None:
    for cls, status in _REPLAYABLE:
        if isinstance(error, cls):
            return status
    return None


def _stored_answer(held: idempotency_db.StoredKey, request: IdempotencyKey) -> Placement:
    if held.request_hash != request.request_hash:
        raise ValidationFailed(
            "this Idempotency-Key was already used with a different request",
            errors=[FieldError("Idempotency-Key", "reused with a different request")],
        )
    if held.state != "done" or held.response_status is None or held.response_body is None:
        raise Conflict("a request with this Idempotency-Key is still in progress; retry later")
    body = held.response_body
    if held.response_status < 300:
        return Placement(held.response_status, body, True, msgspec.json.decode(body, type=Order))
    problem = orjson.loads(body)
    error_type = _ERROR_OF_STATUS.get(held.response_status, BadRequest)
    error = error_type(
        problem.get("detail", ""),
        errors=[FieldError.from_problem(e) for e in problem.get("errors", [])],
    )
    return Placement(held.response_status, body, True, None, error)


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
        return _stored_answer(held, request)
    try:
        async with pool.acquire() as conn, conn.transaction():
            order = order_view(await place(conn))
            body = msgspec.json.encode(order)
            await idempotency_db.complete(conn, user_id, request.key, 201, body)
    except DomainError as error:
        status = _replayable_status(error)
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


# ---- reading ----------------------------------------------------------------------------------


def _visible(principal: Principal, order: OrderRecord) -> bool:
    """Staff (admin, service) see every order; a customer only their own."""
    return principal.is_staff or order.user_id == principal.user_id


async def get_order(ctx: AppContext, principal: Principal, order_id: int) -> Order:
    order = await orders_db.get_order(ctx.pool, order_id)
    if order is None or not _visible(principal, order):
        # Someone else's order is indistinguishable from a missing one.
        raise NotFound(f"order {order_id} not found")
    return order_view(order)


def _encode_cursor(order_id: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(order_id).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    digits = raw.removeprefix(_CURSOR_PREFIX)
    if not raw.startswith(_CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 18:
        raise BadRequest(
            "the cursor is invalid; pass back a next_cursor unchanged",
            errors=[FieldError("cursor", "not a cursor of this list")],
        )
    return int(digits)


def check_status(value: str, field: str = "status") -> OrderStatus:
    for status in ORDER_STATUSES:
        if value == status:
            return status
    raise ValidationFailed(
        f"unknown order status {value!r}",
        errors=[FieldError(field, "one of " + ", ".join(ORDER_STATUSES))],
    )


async def list_orders(
    ctx: AppContext,
    principal: Principal,
    *,
    user_id: int | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> OrderPage:
    """Customers list their own orders; staff all orders, or one user's with `user_id`."""
    # Query-style inputs: a bad one is a malformed request (400), as for every other list.
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(
            "invalid query parameter 'limit'",
            errors=[FieldError("limit", f"between 1 and {MAX_PAGE}")],
        )
    if status is not None and status not in ORDER_STATUSES:
        raise BadRequest(
            "invalid query parameter 'status'",
            errors=[FieldError("status", "one of " + ", ".join(ORDER_STATUSES))],
        )
    if not principal.is_staff:
        if user_id is not None and user_id != principal.user_id:
            raise PermissionDenied("only admins may list other users' orders")
        user_id = principal.user_id
    before_id = _decode_cursor(cursor) if cursor else None
    rows = await orders_db.list_orders(
        ctx.pool, user_id=user_id, status=status, before_id=before_id, limit=limit + 1
    )
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return OrderPage([order_view(o) for o in page], next_cursor)


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
        if order is None or not _visible(principal, order):
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
