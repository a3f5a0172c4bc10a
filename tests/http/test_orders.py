"""REST /orders: checkout, idempotency, reading, cancelling and status changes."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import orjson
import pytest

from server import metrics
from server.context import AppContext
from server.services import orders
from tests.conftest import ApiClient
from tests.orders_support import (
    ADDRESS,
    Accounts,
    cart_size,
    create_product,
    fill_cart,
    stock_of,
    variant_of,
)

ORDERS = "/api/v1/orders"
ORDER_KEYS = {
    "id",
    "user_id",
    "status",
    "items",
    "subtotal",
    "discount",
    "tax",
    "total",
    "currency",
    "promotion_code",
    "shipping_address",
    "note",
    "created_at",
    "updated_at",
    "reserved_until",
}
ITEM_KEYS = {
    "product_id",
    "variant_id",
    "sku",
    "name",
    "options",
    "quantity",
    "unit_price",
    "line_total",
}


async def checkout(
    api: ApiClient,
    ctx: AppContext,
    user_id: int,
    token: str,
    items: dict[int, int],
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    await fill_cart(ctx.pool, user_id, items)
    return await api.post(ORDERS, json=body or {}, token=token, headers=headers)


async def an_order(
    api: ApiClient, ctx: AppContext, accounts: Accounts, quantity: int = 1
) -> tuple[dict[str, Any], str, int]:
    """A fresh customer's pending order: (order, the owner's token, product id)."""
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=20)
    response = await checkout(api, ctx, user.id, token, {product: quantity})
    assert response.status == 201, response
    return response.json(), token, product


@pytest.fixture(scope="module")
def accounts(ctx: AppContext) -> Accounts:
    return Accounts(ctx)


# ---- checkout ---------------------------------------------------------------------------------


async def test_checkout_answers_201_with_the_order_and_empties_the_cart(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    kettle = await create_product(ctx.pool, stock=10, price=2500, name="Kettle")
    mug = await create_product(ctx.pool, stock=10, price=450, name="Mug")

    response = await checkout(
        api,
        ctx,
        user.id,
        token,
        {kettle: 1, mug: 4},
        {"shipping_address": ADDRESS, "note": "leave at the door"},
    )

    assert response.status == 201, response
    order = response.json()
    assert set(order) == ORDER_KEYS
    assert response.headers["Location"] == f"{ORDERS}/{order['id']}"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert order["user_id"] == user.id and order["status"] == "pending"
    assert all(set(item) == ITEM_KEYS for item in order["items"])
    assert [
        (i["product_id"], i["quantity"], i["unit_price"], i["line_total"], i["name"])
        for i in order["items"]
    ] == [(kettle, 1, 2500, 2500, "Kettle"), (mug, 4, 450, 1800, "Mug")]
    figures = (order["subtotal"], order["discount"], order["tax"], order["total"])
    assert figures == (4300, 0, 0, 4300)
    assert order["currency"] == "USD" and order["promotion_code"] is None
    assert order["shipping_address"] == {**ADDRESS, "line2": None}
    assert order["note"] == "leave at the door"
    assert order["created_at"].endswith("Z") and order["created_at"] == order["updated_at"]
    assert await cart_size(ctx.pool, user.id) == 0
    assert await stock_of(ctx.pool, kettle) == 9 and await stock_of(ctx.pool, mug) == 6


async def test_checkout_accepts_no_body_and_a_trailing_slash(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=3)
    await fill_cart(ctx.pool, user.id, {product: 1})
    response = await api.post(ORDERS + "/", token=token)
    assert response.status == 201, response
    assert response.json()["shipping_address"] is None and response.json()["note"] is None


async def test_an_empty_cart_cannot_be_checked_out(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    never_had_a_cart = await api.post(ORDERS, json={}, token=token)
    await fill_cart(ctx.pool, user.id, {})
    emptied = await api.post(ORDERS, json={}, token=token)
    for response in (never_had_a_cart, emptied):
        assert response.status == 422
        assert response.headers["Content-Type"] == "application/problem+json"


async def test_short_stock_is_409_naming_the_short_lines_and_takes_nothing(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    scarce = await create_product(ctx.pool, stock=2)
    plenty = await create_product(ctx.pool, stock=50)

    gone = await create_product(ctx.pool, stock=0)
    key = {"Idempotency-Key": "short-stock"}

    response = await checkout(api, ctx, user.id, token, {scarce: 3, plenty: 1, gone: 1}, None, key)

    assert response.status == 409
    problem = response.json()
    assert sorted(problem["errors"], key=lambda e: e["product_id"]) == sorted(
        [
            {
                "field": f"items.{await variant_of(ctx.pool, scarce)}",
                "message": "requested 3, only 2 in stock",
                "product_id": scarce,
                "variant_id": await variant_of(ctx.pool, scarce),
                "requested": 3,
                "available": 2,
            },
            {
                "field": f"items.{await variant_of(ctx.pool, gone)}",
                "message": "requested 1, only 0 in stock",
                "product_id": gone,
                "variant_id": await variant_of(ctx.pool, gone),
                "requested": 1,
                "available": 0,
            },
        ],
        key=lambda e: e["product_id"],
    )
    assert await stock_of(ctx.pool, scarce) == 2 and await stock_of(ctx.pool, plenty) == 50
    assert await cart_size(ctx.pool, user.id) == 3
    # The stored answer of the key replays the same facts.
    replay = await api.post(ORDERS, json={}, token=token, headers=key)
    assert replay.status == 409 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["errors"] == problem["errors"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"status": "paid"}, "status"),
        ({"user_id": 1}, "user_id"),
        ({"total": 0}, "total"),
        ({"items": []}, "items"),
        ({"note": "x" * 501}, "note"),
        ({"shipping_address": {**ADDRESS, "city": ""}}, "shipping_address.city"),
        ({"shipping_address": {"name": "No Street"}}, "shipping_address.line1"),
        ({"shipping_address": {**ADDRESS, "phone": "1"}}, "shipping_address.phone"),
    ],
)
async def test_invalid_or_read_only_fields_are_422(
    api: ApiClient, ctx: AppContext, accounts: Accounts, body: dict[str, Any], field: str
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=5)
    response = await checkout(api, ctx, user.id, token, {product: 1}, body)
    assert response.status == 422, response
    assert response.json()["errors"][0]["field"] == field
    assert await stock_of(ctx.pool, product) == 5


async def test_malformed_json_is_400(api: ApiClient, accounts: Accounts) -> None:
    _, token = await accounts.create()
    response = await api.post(
        ORDERS, body=b"{nope", token=token, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400


async def test_checkout_needs_a_token(api: ApiClient) -> None:
    response = await api.post(ORDERS, json={})
    assert response.status == 401 and "Bearer" in response.headers["WWW-Authenticate"]


# ---- idempotency ------------------------------------------------------------------------------


async def test_a_retry_with_the_same_key_replays_the_first_response(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    key = {"Idempotency-Key": "order-attempt-1"}

    first = await checkout(api, ctx, user.id, token, {product: 2}, {"note": "hi"}, key)
    await fill_cart(ctx.pool, user.id, {product: 1})  # even with a new cart: same answer
    replay = await api.post(ORDERS, json={"note": "hi"}, token=token, headers=key)

    assert first.status == 201 and "Idempotent-Replayed" not in first.headers
    assert replay.status == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.body == first.body
    assert replay.headers["Location"] == first.headers["Location"]
    assert await ctx.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user.id) == 1
    assert await stock_of(ctx.pool, product) == 8


async def test_the_replay_is_the_first_answer_even_after_the_order_moved_on(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    key = {"Idempotency-Key": "moved-on"}
    first = await checkout(api, ctx, user.id, token, {product: 1}, headers=key)
    await api.post(f"{ORDERS}/{first.json()['id']}/cancel", token=token)
    replay = await api.post(ORDERS, json={}, token=token, headers=key)
    assert replay.json()["status"] == "pending" and replay.body == first.body


async def test_the_same_key_with_another_body_is_422(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    key = {"Idempotency-Key": "one-purpose"}
    assert (
        await checkout(api, ctx, user.id, token, {product: 1}, {"note": "a"}, key)
    ).status == 201
    other = await checkout(api, ctx, user.id, token, {product: 1}, {"note": "b"}, key)
    assert other.status == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await cart_size(ctx.pool, user.id) == 1


async def test_equivalent_bodies_are_the_same_request(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    key = {"Idempotency-Key": "same-thing"}
    first = await checkout(api, ctx, user.id, token, {product: 1}, {"note": None}, key)
    again = await api.post(ORDERS, body=b"", token=token, headers=key)
    assert first.status == 201 and again.status == 201 and again.body == first.body


async def test_a_refused_checkout_is_replayed_too(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=0)
    key = {"Idempotency-Key": "too-early"}
    first = await checkout(api, ctx, user.id, token, {product: 1}, headers=key)
    await ctx.pool.execute("UPDATE product_variants SET stock = 5 WHERE product_id = $1", product)
    replay = await api.post(ORDERS, json={}, token=token, headers=key)
    fresh = await api.post(ORDERS, json={}, token=token, headers={"Idempotency-Key": "later"})
    assert first.status == 409 and replay.status == 409 and replay.body == first.body
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Content-Type"] == "application/problem+json"
    assert fresh.status == 201


async def test_a_refusal_stored_as_a_problem_document_by_an_earlier_version_is_replayed(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    fingerprint = msgspec.to_builtins(orders.OrderDetails())  # what the handler hashes for {}
    key = orders.idempotency_key("from-before", "POST", ORDERS, fingerprint)
    assert key is not None
    stored = {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "not enough stock for some items",
        "errors": [{"field": "items.7", "message": "requested 2, only 1 in stock", "available": 1}],
    }
    await ctx.pool.execute(
        """INSERT INTO idempotency_keys (user_id, key, request_hash, state, response_status,
                                         response_body)
           VALUES ($1, $2, $3, 'done', 409, $4)""",
        user.id,
        key.key,
        key.request_hash,
        orjson.dumps(stored),
    )
    replay = await api.post(ORDERS, json={}, token=token, headers={"Idempotency-Key": key.key})
    assert replay.status == 409 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == stored


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_invalid_idempotency_key_is_422(
    api: ApiClient, ctx: AppContext, accounts: Accounts, key: str
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    response = await checkout(
        api, ctx, user.id, token, {product: 1}, headers={"Idempotency-Key": key}
    )
    assert response.status == 422
    assert await stock_of(ctx.pool, product) == 10


async def test_a_key_of_255_characters_is_fine(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    response = await checkout(
        api, ctx, user.id, token, {product: 1}, headers={"Idempotency-Key": "k" * 255}
    )
    assert response.status == 201


async def test_keys_belong_to_their_user(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    alice, alice_token = await accounts.create()
    bob, bob_token = await accounts.create()
    product = await create_product(ctx.pool, stock=10)
    key = {"Idempotency-Key": "shared-key"}
    first = await checkout(api, ctx, alice.id, alice_token, {product: 1}, headers=key)
    second = await checkout(api, ctx, bob.id, bob_token, {product: 1}, headers=key)
    assert first.status == second.status == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["user_id"] == bob.id != first.json()["user_id"]


# ---- reading ----------------------------------------------------------------------------------


async def test_get_order_for_the_owner_and_admins_only(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, _ = await an_order(api, ctx, accounts)
    _, stranger = await accounts.create()
    _, admin = await accounts.create("admin")
    path = f"{ORDERS}/{order['id']}"

    mine = await api.get(path, token=token)
    assert mine.status == 200 and mine.json() == order
    assert (await api.get(path, token=admin)).json() == order
    theirs = await api.get(path, token=stranger)
    missing = await api.get(f"{ORDERS}/999999999", token=stranger)
    assert theirs.status == missing.status == 404
    assert theirs.json()["title"] == missing.json()["title"]
    assert (await api.get(path)).status == 401


async def test_list_is_own_orders_newest_first_with_a_cursor(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    user, token = await accounts.create()
    other, other_token = await accounts.create()
    product = await create_product(ctx.pool, stock=50)
    placed = [
        (await checkout(api, ctx, user.id, token, {product: 1})).json()["id"] for _ in range(5)
    ]
    await checkout(api, ctx, other.id, other_token, {product: 1})

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get(ORDERS + query, token=token)).json()
        assert set(page) == {"items", "next_cursor"} and len(page["items"]) <= 2
        seen += [o["id"] for o in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(placed, reverse=True) and pages == 3


async def test_list_filters_by_status(api: ApiClient, ctx: AppContext, accounts: Accounts) -> None:
    user, token = await accounts.create()
    product = await create_product(ctx.pool, stock=50)
    kept = (await checkout(api, ctx, user.id, token, {product: 1})).json()["id"]
    dropped = (await checkout(api, ctx, user.id, token, {product: 1})).json()["id"]
    await api.post(f"{ORDERS}/{dropped}/cancel", token=token)

    pending = (await api.get(f"{ORDERS}?status=pending", token=token)).json()["items"]
    cancelled = (await api.get(f"{ORDERS}?status=cancelled", token=token)).json()["items"]
    assert [o["id"] for o in pending] == [kept] and [o["id"] for o in cancelled] == [dropped]


async def test_admins_list_everyone_or_one_user(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    alice_order, _, _ = await an_order(api, ctx, accounts)
    bob_order, _, _ = await an_order(api, ctx, accounts)
    _, admin = await accounts.create("admin")

    everyone = (await api.get(f"{ORDERS}?limit=100", token=admin)).json()["items"]
    alices = (await api.get(f"{ORDERS}?user_id={alice_order['user_id']}", token=admin)).json()
    assert {alice_order["id"], bob_order["id"]} <= {o["id"] for o in everyone}
    assert [o["id"] for o in alices["items"]] == [alice_order["id"]]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=ten", "status=lost", "cursor=not-a-cursor", "user_id=-3"],
)
async def test_bad_list_queries_are_400(api: ApiClient, accounts: Accounts, query: str) -> None:
    _, token = await accounts.create("admin")
    response = await api.get(f"{ORDERS}?{query}", token=token)
    assert response.status == 400, response


# ---- BOLA: nothing of someone else's order is reachable ---------------------------------------


async def test_another_customer_cannot_reach_an_order_on_any_route(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, owner_token, product = await an_order(api, ctx, accounts, quantity=2)
    _, thief = await accounts.create()
    path = f"{ORDERS}/{order['id']}"

    assert (await api.get(path, token=thief)).status == 404
    assert (await api.post(f"{path}/cancel", token=thief)).status == 404
    assert (
        await api.patch(f"{path}/status", json={"status": "cancelled"}, token=thief)
    ).status == 403
    listed = (await api.get(f"{ORDERS}?limit=100", token=thief)).json()["items"]
    assert order["id"] not in [o["id"] for o in listed]
    other_user = await api.get(f"{ORDERS}?user_id={order['user_id']}", token=thief)
    assert other_user.status == 403
    # Nothing changed.
    assert (await api.get(path, token=owner_token)).json() == order
    assert await stock_of(ctx.pool, product) == 18


# ---- cancelling and status changes ------------------------------------------------------------


async def test_the_owner_cancels_a_pending_order_and_the_stock_comes_back(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, product = await an_order(api, ctx, accounts, quantity=3)
    assert await stock_of(ctx.pool, product) == 17

    response = await api.post(f"{ORDERS}/{order['id']}/cancel", token=token)

    assert response.status == 200 and response.json()["status"] == "cancelled"
    assert await stock_of(ctx.pool, product) == 20
    again = await api.post(f"{ORDERS}/{order['id']}/cancel", token=token)
    assert again.status == 409 and await stock_of(ctx.pool, product) == 20


async def test_a_paid_order_is_cancelled_by_an_admin_not_the_owner(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, product = await an_order(api, ctx, accounts, quantity=2)
    _, admin = await accounts.create("admin")
    path = f"{ORDERS}/{order['id']}"
    paid = await api.patch(f"{path}/status", json={"status": "paid"}, token=admin)
    assert paid.status == 200 and paid.json()["status"] == "paid"

    assert (await api.post(f"{path}/cancel", token=token)).status == 409
    by_admin = await api.post(f"{path}/cancel", token=admin)

    assert by_admin.status == 200 and by_admin.json()["status"] == "cancelled"
    assert await stock_of(ctx.pool, product) == 20


async def test_staff_walk_an_order_to_delivered(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, _, _ = await an_order(api, ctx, accounts)
    _, admin = await accounts.create("admin")
    _, service = await accounts.create("service")
    path = f"{ORDERS}/{order['id']}/status"
    for status, token in (("paid", service), ("shipped", admin), ("delivered", service)):
        response = await api.patch(path, json={"status": status}, token=token)
        assert response.status == 200 and response.json()["status"] == status
    backwards = await api.patch(path, json={"status": "paid"}, token=admin)
    assert backwards.status == 409


async def test_a_service_cannot_cancel_a_paid_order(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, _, product = await an_order(api, ctx, accounts)
    _, service = await accounts.create("service")
    path = f"{ORDERS}/{order['id']}/status"
    assert (await api.patch(path, json={"status": "paid"}, token=service)).status == 200
    refused = await api.patch(path, json={"status": "cancelled"}, token=service)
    assert refused.status == 409 and await stock_of(ctx.pool, product) == 19


async def test_customers_cannot_change_a_status(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    order, token, _ = await an_order(api, ctx, accounts)
    response = await api.patch(
        f"{ORDERS}/{order['id']}/status", json={"status": "paid"}, token=token
    )
    assert response.status == 403
    assert (await api.get(f"{ORDERS}/{order['id']}", token=token)).json()["status"] == "pending"


@pytest.mark.parametrize("body", [{"status": "lost"}, {}, {"status": "paid", "id": 1}])
async def test_an_invalid_status_body_is_422(
    api: ApiClient, ctx: AppContext, accounts: Accounts, body: dict[str, Any]
) -> None:
    order, _, _ = await an_order(api, ctx, accounts)
    _, admin = await accounts.create("admin")
    response = await api.patch(f"{ORDERS}/{order['id']}/status", json=body, token=admin)
    assert response.status == 422


async def test_status_of_an_unknown_order_is_404(api: ApiClient, accounts: Accounts) -> None:
    _, admin = await accounts.create("admin")
    response = await api.patch(f"{ORDERS}/987654321/status", json={"status": "paid"}, token=admin)
    assert response.status == 404


async def test_a_checkout_retires_only_the_products_it_sold(
    api: ApiClient, ctx: AppContext, accounts: Accounts
) -> None:
    """Targeted invalidation: the sold product shows its new stock at once, in the list as on
    its page; another product's page and the list's view stay cached (computed no more)."""
    user, token = await accounts.create()
    word = f"retire{uuid.uuid4().hex[:8]}"  # a list of these two products alone
    sold = await create_product(ctx.pool, stock=5, name=f"{word} one")
    untouched = await create_product(ctx.pool, stock=5, name=f"{word} two")
    pages = (
        f"/api/v1/products/{sold}",
        f"/api/v1/products/{untouched}",
        f"/api/v1/products?q={word}",
    )
    for path in pages:
        assert (await api.get(path)).status == 200

    def misses(namespace: str) -> float:
        return metrics.sample("cache_lookups_total", {"namespace": namespace, "result": "miss"})

    namespaces = ("products", "product-lists", "list-items")
    before = {namespace: misses(namespace) for namespace in namespaces}
    assert (await checkout(api, ctx, user.id, token, {sold: 2})).status == 201
    assert (await api.get(pages[1])).status == 200
    listed = {item["id"]: item["stock"] for item in (await api.get(pages[2])).json()["items"]}
    assert listed[sold] == 3 and listed[untouched] == 5  # the list's bodies are exact
    # The list's view was not recomputed; of its bodies only the sold product's was read again.
    assert {namespace: misses(namespace) for namespace in namespaces} == {
        **before,
        "list-items": before["list-items"] + 1,
    }
    page = await api.get(pages[0])
    assert page.json()["stock"] == 3  # from the body the list read back
    assert misses("products") == before["products"]
