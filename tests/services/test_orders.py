"""The order rules of server.services.orders against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from server.context import AppContext
from server.db.orders import OrderRecord
from server.db.users import UserRecord
from server.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from server.domain.principal import Principal
from server.services import catalog, orders, variants
from server.services.orders import checkout
from tests.orders_support import (
    ADDRESS,
    Accounts,
    cart_size,
    create_product,
    create_promotion,
    expire_reservations,
    fill_cart,
    outbox_rows,
    stock_of,
    units_sold,
    variant_of,
)


def principal_of(user: UserRecord) -> Principal:
    return Principal(user.id, user.role)


def order_input(items: dict[int, int], **extra: object) -> orders.OrderInput:
    return orders.parse_order_input(
        {"items": [{"product_id": p, "quantity": q} for p, q in items.items()], **extra}
    )


async def place(
    ctx: AppContext, user: UserRecord, items: dict[int, int], **extra: object
) -> orders.Order:
    placement = await orders.create_order(ctx, principal_of(user), order_input(items, **extra))
    assert placement.order is not None
    return placement.order


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


# ---- checkout ---------------------------------------------------------------------------------


async def test_an_order_takes_stock_and_snapshots_the_products(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    a = await create_product(ctx.pool, stock=10, price=1250, name="Teapot")
    b = await create_product(ctx.pool, stock=4, price=399)

    placement = await orders.create_order(
        ctx,
        principal_of(user),
        order_input({b: 2, a: 3}, shipping_address=ADDRESS, note="ring twice"),
    )

    order = placement.order
    assert not placement.replayed and placement.error is None and order is not None
    assert order.user_id == user.id and order.status == "pending"
    assert [(i.product_id, i.quantity, i.unit_price, i.line_total) for i in order.items] == [
        (a, 3, 1250, 3750),
        (b, 2, 399, 798),
    ]
    assert order.items[0].name == "Teapot"
    assert (order.subtotal, order.discount, order.tax, order.total) == (4548, 0, 0, 4548)
    assert order.currency == "USD" and order.promotion_code is None
    assert order.shipping_address == orders.ShippingAddress(**ADDRESS)
    assert order.note == "ring twice"
    assert await stock_of(ctx.pool, a) == 7 and await stock_of(ctx.pool, b) == 2
    assert await units_sold(ctx.pool, a) == 3 and await units_sold(ctx.pool, b) == 2
    # The price snapshot survives a later price change.
    await ctx.pool.execute("UPDATE products SET price = 1 WHERE id = $1", a)
    again = await orders.get_order(ctx, principal_of(user), order.id)
    assert again.items[0].unit_price == 1250 and again.total == 4548


async def test_an_order_writes_its_confirmation_to_the_outbox(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=50, price=1999)

    order = await place(ctx, user, {product: 1})

    [mail] = await outbox_rows(ctx.pool, f"order_confirmation:{order.id}")
    assert mail["kind"] == "order_confirmation" and mail["recipient"] == user.email
    assert f"#{order.id}" in mail["subject"] and "19.99 USD" in mail["body"]


async def test_the_outbox_row_is_committed_with_the_order_or_not_at_all(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=5)
    async with ctx.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        order = await orders.place_order(
            conn,
            ctx.settings,
            user_id=user.id,
            lines=[(product, 1)],
            promotion_code=None,
            details=orders.OrderDetails(),
        )
        key = f"order_confirmation:{order.id}"
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE dedupe_key = $1", key) == 1
        # Not visible outside before the commit: written by the order's own transaction.
        assert await outbox_rows(ctx.pool, key) == []
        assert await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE id = $1", order.id) == 0
        await transaction.rollback()
    assert await outbox_rows(ctx.pool, key) == []
    assert await stock_of(ctx.pool, product) == 5


async def test_place_order_refuses_to_run_outside_a_transaction(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    async with ctx.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await orders.place_order(
                conn,
                ctx.settings,
                user_id=user.id,
                lines=[(1, 1)],
                promotion_code=None,
                details=orders.OrderDetails(),
            )


async def test_short_stock_names_every_short_line_and_takes_nothing(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    short = await create_product(ctx.pool, stock=1)
    plenty = await create_product(ctx.pool, stock=5)
    gone = await create_product(ctx.pool, stock=0)
    inactive = await create_product(ctx.pool, stock=9, is_active=False)

    with pytest.raises(Conflict) as refused:
        await place(ctx, user, {short: 2, plenty: 1, gone: 1, inactive: 1})

    messages = {e.field: e.message for e in refused.value.errors}
    # Lines are named by their variant; a product no longer for sale by its place in the order.
    assert messages == {
        f"items.{await variant_of(ctx.pool, short)}": "requested 2, only 1 in stock",
        f"items.{await variant_of(ctx.pool, gone)}": "requested 1, only 0 in stock",
        "items[3]": "this product is no longer available",
    }
    assert [await stock_of(ctx.pool, p) for p in (short, plenty, gone, inactive)] == [1, 5, 0, 9]
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user.id) == 0


async def test_an_unknown_product_is_refused_like_an_unavailable_one(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    with pytest.raises(Conflict) as refused:
        await place(ctx, user, {987_654_321: 1})
    assert refused.value.errors[0].field == "items[0]"


@pytest.mark.parametrize(
    "items, field",
    [
        ([], "items"),
        ([{"product_id": 1, "quantity": 0}], "items[0].quantity"),
        ([{"product_id": 1, "quantity": 1000}], "items[0].quantity"),
        (
            [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}],
            "items[1].product_id",
        ),
        ([{"product_id": 1, "quantity": 1, "price": 1}], "items[0]"),
    ],
)
def test_order_input_is_validated(items: list[dict[str, int]], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        orders.parse_order_input({"items": items})
    assert refused.value.errors[0].field.startswith(field)


def test_order_details_are_validated() -> None:
    with pytest.raises(ValidationFailed):
        orders.parse_order_input({"items": [{"product_id": 1, "quantity": 1}], "note": "x" * 501})
    with pytest.raises(ValidationFailed):
        orders.parse_order_input(
            {
                "items": [{"product_id": 1, "quantity": 1}],
                "shipping_address": {**ADDRESS, "city": ""},
            }
        )


async def test_a_percent_promotion_is_priced_and_counted(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=10, price=1000)
    promotion = await create_promotion(ctx.pool, "TENOFF-SVC", value=10, usage_limit=5)

    order = await place(ctx, user, {product: 2}, promotion_code="tenoff-svc")

    assert (order.subtotal, order.discount, order.total) == (2000, 200, 1800)
    assert order.promotion_code == "TENOFF-SVC"
    assert order.items[0].line_total == 1800
    assert (
        await ctx.pool.fetchval("SELECT times_used FROM promotions WHERE id = $1", promotion) == 1
    )


@pytest.mark.parametrize(
    "code, setup",
    [
        ("NOPE-NEVER", None),
        ("EXPIRED-SVC", {"ends_in": "-1 day"}),
        ("USEDUP-SVC", {"usage_limit": 0}),
        ("MINIMUM-SVC", {"min_subtotal": 1_000_000}),
    ],
)
async def test_an_unusable_promotion_refuses_the_order_and_takes_nothing(
    ctx: AppContext, accounts: Accounts, code: str, setup: dict[str, object] | None
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=3)
    if setup is not None:
        await create_promotion(ctx.pool, code, **setup)  # type: ignore[arg-type]

    with pytest.raises(ValidationFailed) as refused:
        await place(ctx, user, {product: 1}, promotion_code=code)

    assert refused.value.errors[0].field == "promotion_code"
    assert await stock_of(ctx.pool, product) == 3


async def test_low_stock_alert_when_stock_crosses_the_threshold(
    ctx: AppContext, accounts: Accounts
) -> None:
    admin, _ = await accounts.create("admin")
    user, _ = await accounts.create()
    threshold = ctx.settings.low_stock_threshold
    product = await create_product(ctx.pool, stock=threshold + 1, name="Kettle")

    first = await place(ctx, user, {product: 1})  # lands exactly on the threshold: not below
    second = await place(ctx, user, {product: 2})  # crosses below
    third = await place(ctx, user, {product: 1})  # already below: no new alert

    assert await outbox_rows(ctx.pool, f"low_stock:{product}:{first.id}:") == []
    alerts = await outbox_rows(ctx.pool, f"low_stock:{product}:{second.id}:")
    admins = [
        r["email"]
        for r in await ctx.pool.fetch("SELECT email FROM users WHERE role = 'admin' ORDER BY id")
    ]
    assert admin.email in admins
    assert [a["recipient"] for a in alerts] == admins
    assert all(a["kind"] == "low_stock" and "Kettle" in a["subject"] for a in alerts)
    assert await outbox_rows(ctx.pool, f"low_stock:{product}:{third.id}:") == []


async def test_an_admin_stock_change_below_the_threshold_alerts_too(
    ctx: AppContext, accounts: Accounts
) -> None:
    """AdjustStock, a product PATCH and a variant PATCH alert like a checkout does: a mail per
    admin and a `stock.low` event, once per fall below the threshold."""
    await accounts.create("admin")
    threshold = ctx.settings.low_stock_threshold

    async def alerts_for(product_id: int) -> tuple[int, int]:
        mails = await ctx.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE kind = 'low_stock' AND dedupe_key LIKE $1",
            "low_stock:%:adjust-%",
        )
        low_events = await ctx.pool.fetchval(
            "SELECT count(*) FROM events"
            " WHERE type = 'stock.low' AND (payload->>'product_id')::bigint = $1",
            product_id,
        )
        return mails, low_events

    adjusted = await create_product(ctx.pool, stock=threshold + 2, name="Adjusted kettle")
    before = (await alerts_for(adjusted))[0]
    await catalog.adjust_stock(ctx, adjusted, -1)  # to threshold + 1: not below
    assert (await alerts_for(adjusted))[1] == 0
    await catalog.adjust_stock(ctx, adjusted, -3)  # below
    await catalog.adjust_stock(ctx, adjusted, -1)  # already below: no new alert
    mails, low_events = await alerts_for(adjusted)
    assert low_events == 1 and mails > before

    patched = await create_product(ctx.pool, stock=threshold, name="Patched kettle")
    await catalog.update_product(ctx, patched, catalog.ProductUpdate(stock=threshold - 1))
    assert (await alerts_for(patched))[1] == 1
    subjects = await ctx.pool.fetch(
        "SELECT subject FROM outbox WHERE kind = 'low_stock' AND subject LIKE '%Patched kettle%'"
    )
    assert subjects

    variant = await variant_of(ctx.pool, patched)
    await catalog.update_product(ctx, patched, catalog.ProductUpdate(stock=threshold + 5))
    await variants.update_variant(ctx, patched, variant, variants.VariantUpdate(stock=0))
    assert (await alerts_for(patched))[1] == 2


async def test_low_stock_alert_goes_to_mail_from_without_admins(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=ctx.settings.low_stock_threshold)
    async with ctx.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("UPDATE users SET role = 'customer' WHERE role = 'admin'")
        order = await orders.place_order(
            conn,
            ctx.settings,
            user_id=user.id,
            lines=[(product, 1)],
            promotion_code=None,
            details=orders.OrderDetails(),
        )
        recipients = await conn.fetch(
            "SELECT recipient FROM outbox WHERE dedupe_key LIKE $1",
            f"low_stock:{product}:{order.id}:%",
        )
        await transaction.rollback()
    assert [r["recipient"] for r in recipients] == [ctx.settings.mail_from]


async def test_cart_checkout_orders_the_cart_and_empties_it(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=5, price=500)
    hidden = await create_product(ctx.pool, stock=5, is_active=False)
    await fill_cart(ctx.pool, user.id, {product: 2, hidden: 1})

    placement = await orders.checkout_cart(ctx, principal_of(user), orders.OrderDetails())

    assert placement.order is not None
    # As GET /cart shows it: an inactive product is not part of the order.
    assert [(i.product_id, i.quantity) for i in placement.order.items] == [(product, 2)]
    assert await cart_size(ctx.pool, user.id) == 0
    assert await stock_of(ctx.pool, hidden) == 5
    with pytest.raises(ValidationFailed):
        await orders.checkout_cart(ctx, principal_of(user), orders.OrderDetails())


async def test_explicit_orders_leave_the_cart_alone(ctx: AppContext, accounts: Accounts) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=5)
    await fill_cart(ctx.pool, user.id, {product: 1})
    await place(ctx, user, {product: 1})
    assert await cart_size(ctx.pool, user.id) == 1


# ---- idempotency ------------------------------------------------------------------------------


def test_the_request_fingerprint_ignores_formatting_but_not_content() -> None:
    one = orders.idempotency_key("k", "POST", "/api/v1/orders", {"note": "a", "x": None})
    two = orders.idempotency_key("k", "post", "/api/v1/orders", {"x": None, "note": "a"})
    other = orders.idempotency_key("k", "POST", "/api/v1/orders", {"note": "b", "x": None})
    elsewhere = orders.idempotency_key("k", "POST", "/api/v1/other", {"note": "a", "x": None})
    assert one is not None and two is not None and other is not None and elsewhere is not None
    assert one.request_hash == two.request_hash
    assert len({one.request_hash, other.request_hash, elsewhere.request_hash}) == 3
    assert orders.idempotency_key(None, "POST", "/", {}) is None


@pytest.mark.parametrize("key", ["", "k" * 256, "bad\nkey"])
def test_an_invalid_idempotency_key_is_refused(key: str) -> None:
    with pytest.raises(ValidationFailed):
        orders.idempotency_key(key, "POST", "/api/v1/orders", {})


async def test_a_refusal_is_stored_and_replayed(ctx: AppContext, accounts: Accounts) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=0)
    key = orders.idempotency_key("refused-once", "GRPC", "/x", {"p": product})

    with pytest.raises(Conflict):
        await orders.create_order(ctx, principal_of(user), order_input({product: 1}), key)
    await ctx.pool.execute("UPDATE product_variants SET stock = 10 WHERE product_id = $1", product)
    replay = await orders.create_order(ctx, principal_of(user), order_input({product: 1}), key)

    assert replay.replayed and replay.order is None and isinstance(replay.error, Conflict)
    assert replay.error.errors[0].field == f"items.{await variant_of(ctx.pool, product)}"
    assert await stock_of(ctx.pool, product) == 10


async def test_an_unexpected_failure_releases_the_key(ctx: AppContext, accounts: Accounts) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=3)
    key = orders.idempotency_key("released", "GRPC", "/x", {})
    assert key is not None

    async def explode(_conn: object) -> OrderRecord:
        raise OSError("connection lost")

    with pytest.raises(OSError):
        await checkout._run_checkout(ctx, user.id, key, explode)
    assert (
        await ctx.pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user.id)
        == 0
    )
    placement = await orders.create_order(ctx, principal_of(user), order_input({product: 1}), key)
    assert not placement.replayed and placement.order is not None


async def test_a_dead_in_flight_claim_is_taken_over_after_its_lease(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=3)
    key = orders.idempotency_key("stuck", "GRPC", "/x", {})
    assert key is not None
    await ctx.pool.execute(
        """INSERT INTO idempotency_keys (user_id, key, request_hash, created_at)
           VALUES ($1, $2, $3, now() - interval '1 hour')""",
        user.id,
        key.key,
        key.request_hash,
    )

    placement = await orders.create_order(ctx, principal_of(user), order_input({product: 1}), key)

    assert not placement.replayed and placement.order is not None


# ---- reading ----------------------------------------------------------------------------------


async def test_customers_see_only_their_own_orders(ctx: AppContext, accounts: Accounts) -> None:
    alice, _ = await accounts.create()
    bob, _ = await accounts.create()
    admin, _ = await accounts.create("admin")
    product = await create_product(ctx.pool, stock=10)
    order = await place(ctx, alice, {product: 1})

    with pytest.raises(NotFound):
        await orders.get_order(ctx, principal_of(bob), order.id)
    assert (await orders.get_order(ctx, principal_of(admin), order.id)).id == order.id
    bobs = await orders.list_orders(ctx, principal_of(bob))
    assert order.id not in [o.id for o in bobs.items]
    with pytest.raises(PermissionDenied):
        await orders.list_orders(ctx, principal_of(bob), user_id=alice.id)
    alices = await orders.list_orders(ctx, principal_of(admin), user_id=alice.id)
    assert [o.id for o in alices.items] == [order.id]


# ---- the state machine ------------------------------------------------------------------------

# Spec, written out independently of the implementation: (from, to) → roles allowed.
LEGAL = {
    ("pending", "paid"): {"admin", "service"},
    ("paid", "shipped"): {"admin", "service"},
    ("shipped", "delivered"): {"admin", "service"},
    ("pending", "cancelled"): {"owner", "admin", "service"},
    ("paid", "cancelled"): {"admin"},
}
STATES = ("pending", "paid", "shipped", "delivered", "cancelled")
ACTORS = ("owner", "admin", "service")


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("source, target", list(itertools.product(STATES, STATES)))
async def test_state_machine(
    ctx: AppContext, accounts: Accounts, actor: str, source: str, target: str
) -> None:
    owner, _ = await accounts.create()
    caller = owner if actor == "owner" else (await accounts.create(actor))[0]
    product = await create_product(ctx.pool, stock=10)
    order = await place(ctx, owner, {product: 3})
    await ctx.pool.execute("UPDATE orders SET status = $2 WHERE id = $1", order.id, source)

    change = orders.change_status(ctx, principal_of(caller), order.id, target)
    if actor in LEGAL.get((source, target), set()):
        changed = await change
        assert changed.status == target and changed.updated_at >= order.updated_at
        assert await stock_of(ctx.pool, product) == (10 if target == "cancelled" else 7)
    else:
        expected = PermissionDenied if actor == "owner" and target != "cancelled" else Conflict
        with pytest.raises(expected):
            await change
        status = await ctx.pool.fetchval("SELECT status FROM orders WHERE id = $1", order.id)
        assert status == source
        assert await stock_of(ctx.pool, product) == 7


async def test_someone_elses_order_cannot_be_cancelled(ctx: AppContext, accounts: Accounts) -> None:
    alice, _ = await accounts.create()
    bob, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=2)
    order = await place(ctx, alice, {product: 1})
    with pytest.raises(NotFound):
        await orders.cancel_order(ctx, principal_of(bob), order.id)
    assert await stock_of(ctx.pool, product) == 1


async def test_an_unknown_status_is_invalid(ctx: AppContext, accounts: Accounts) -> None:
    admin, _ = await accounts.create("admin")
    with pytest.raises(ValidationFailed):
        await orders.change_status(ctx, principal_of(admin), 1, "lost")


async def test_cancelling_takes_back_units_sold(ctx: AppContext, accounts: Accounts) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    order = await place(ctx, user, {product: 4})
    assert await units_sold(ctx.pool, product) == 4
    await orders.cancel_order(ctx, principal_of(user), order.id)
    assert await units_sold(ctx.pool, product) == 0 and await stock_of(ctx.pool, product) == 10


# ---- expiry -----------------------------------------------------------------------------------


async def test_expired_unpaid_orders_are_cancelled_and_restocked(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=100)
    old = [await place(ctx, user, {product: 2}) for _ in range(3)]
    old_paid = await place(ctx, user, {product: 5})
    recent = await place(ctx, user, {product: 1})
    await expire_reservations(ctx.pool, [o.id for o in [*old, old_paid]])
    await ctx.pool.execute("UPDATE orders SET status = 'paid' WHERE id = $1", old_paid.id)
    assert await stock_of(ctx.pool, product) == 100 - 6 - 5 - 1

    async with ctx.pool.acquire() as conn:
        cancelled = await orders.cancel_expired_unpaid(conn)
        again = await orders.cancel_expired_unpaid(conn)

    assert cancelled >= 3 and again == 0
    statuses = dict(
        await ctx.pool.fetch("SELECT id, status FROM orders WHERE user_id = $1", user.id)
    )
    assert [statuses[o.id] for o in old] == ["cancelled"] * 3
    assert statuses[old_paid.id] == "paid" and statuses[recent.id] == "pending"
    assert await stock_of(ctx.pool, product) == 100 - 5 - 1


async def test_two_expiry_runs_at_once_restock_each_order_once(
    ctx: AppContext, accounts: Accounts
) -> None:
    user, _ = await accounts.create()
    product = await create_product(ctx.pool, stock=1000)
    placed = [await place(ctx, user, {product: 1}) for _ in range(250)]
    await expire_reservations(ctx.pool, [o.id for o in placed])

    async def run() -> int:
        async with ctx.pool.acquire() as conn:
            return await orders.cancel_expired_unpaid(conn)

    counts = await asyncio.gather(run(), run())

    assert sum(counts) >= 250
    assert (
        await ctx.pool.fetchval(
            "SELECT count(*) FROM orders WHERE user_id = $1 AND status = 'cancelled'", user.id
        )
        == 250
    )
    assert await stock_of(ctx.pool, product) == 1000
