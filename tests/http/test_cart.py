"""REST cart: one per user, lines add up, stock and quantity limits, promotions, pricing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.context import AppContext
from tests.conftest import ApiClient, UserFactory

EMPTY_CART = {
    "items": [],
    "subtotal": 0,
    "discount": 0,
    "tax": 0,
    "total": 0,
    "currency": "USD",
    "promotion_code": None,
}


@pytest.fixture(scope="module")
async def admin(make_user: UserFactory) -> str:
    _, token = await make_user.create("admin")
    return token


@pytest.fixture
async def shopper(make_user: UserFactory) -> str:
    """A fresh customer per test, so every test starts from an empty cart."""
    _, token = await make_user.create("customer")
    return token


async def product(api: ApiClient, admin: str, **body: Any) -> dict[str, Any]:
    body = {
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": "Mug",
        "price": 1000,
        "stock": 10,
        **body,
    }
    response = await api.post("/api/v1/products", json=body, token=admin)
    assert response.status == 201, response
    return response.json()


async def promotion(api: ApiClient, admin: str, **body: Any) -> dict[str, Any]:
    body = {"code": f"PROMO{uuid.uuid4().hex[:8]}", "kind": "percent", "value": 10, **body}
    response = await api.post("/api/v1/promotions", json=body, token=admin)
    assert response.status == 201, response
    return response.json()


async def test_a_new_users_cart_is_empty(api: ApiClient, shopper: str) -> None:
    response = await api.get("/api/v1/cart", token=shopper)
    assert response.status == 200
    assert response.json() == EMPTY_CART
    assert response.headers["Cache-Control"] == "private, no-store"


async def test_cart_needs_authentication(api: ApiClient) -> None:
    response = await api.get("/api/v1/cart")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_adding_twice_sums_quantities_and_prices_the_lines(
    api: ApiClient, admin: str, shopper: str
) -> None:
    mug = await product(api, admin, price=1250)
    await api.post(
        "/api/v1/cart/items", json={"product_id": mug["id"], "quantity": 2}, token=shopper
    )
    response = await api.post(
        "/api/v1/cart/items", json={"product_id": mug["id"], "quantity": 3}, token=shopper
    )
    assert response.status == 200
    assert response.json() == {
        "items": [
            {
                "product_id": mug["id"],
                "variant_id": mug["variants"][0]["id"],
                "sku": mug["sku"],
                "name": "Mug",
                "options": {},
                "quantity": 5,
                "unit_price": 1250,
                "line_subtotal": 6250,
                "line_discount": 0,
                "line_total": 6250,
            }
        ],
        "subtotal": 6250,
        "discount": 0,
        "tax": 0,
        "total": 6250,
        "currency": "USD",
        "promotion_code": None,
    }


async def test_more_than_stock_is_409_and_changes_nothing(
    api: ApiClient, admin: str, shopper: str
) -> None:
    lamp = await product(api, admin, stock=3)
    ok = await api.post(
        "/api/v1/cart/items", json={"product_id": lamp["id"], "quantity": 2}, token=shopper
    )
    assert ok.status == 200
    too_many = await api.post(
        "/api/v1/cart/items", json={"product_id": lamp["id"], "quantity": 2}, token=shopper
    )
    assert too_many.status == 409
    cart = (await api.get("/api/v1/cart", token=shopper)).json()
    assert [line["quantity"] for line in cart["items"]] == [2]


async def test_unknown_or_inactive_product_is_404(api: ApiClient, admin: str, shopper: str) -> None:
    gone = await product(api, admin)
    await api.delete(f"/api/v1/products/{gone['id']}", token=admin)
    for product_id in (gone["id"], 987654321):
        response = await api.post(
            "/api/v1/cart/items", json={"product_id": product_id, "quantity": 1}, token=shopper
        )
        assert response.status == 404


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 0},
        {"quantity": 1000},
        {"quantity": "2"},
        {"quantity": 2.5},
        {"quantity": 1e300},
        {"price": 1, "quantity": 1},
        {"quantity": 1, "product_id": 0},
    ],
)
async def test_invalid_cart_item_bodies_are_422(
    api: ApiClient, admin: str, shopper: str, body: dict[str, Any]
) -> None:
    item = await product(api, admin)
    response = await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], **body}, token=shopper
    )
    assert response.status == 422, response


async def test_a_whole_number_written_as_a_float_is_an_integer(
    api: ApiClient, admin: str, shopper: str
) -> None:
    """JSON Schema (the published document) counts 2.0 as an integer; so does the gateway."""
    item = await product(api, admin, stock=10)
    response = await api.post(
        "/api/v1/cart/items", json={"product_id": float(item["id"]), "quantity": 2.0}, token=shopper
    )
    assert response.status == 200, response
    assert [(line["product_id"], line["quantity"]) for line in response.json()["items"]] == [
        (item["id"], 2)
    ]


async def test_summing_beyond_999_is_422(api: ApiClient, admin: str, shopper: str) -> None:
    item = await product(api, admin, stock=5000)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 999}, token=shopper
    )
    response = await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
    )
    assert response.status == 422


async def test_patch_sets_quantity_and_zero_removes(
    api: ApiClient, admin: str, shopper: str
) -> None:
    item = await product(api, admin, stock=4)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
    )
    set_to_4 = await api.patch(
        f"/api/v1/cart/items/{item['id']}", json={"quantity": 4}, token=shopper
    )
    assert set_to_4.status == 200 and set_to_4.json()["items"][0]["quantity"] == 4
    too_many = await api.patch(
        f"/api/v1/cart/items/{item['id']}", json={"quantity": 5}, token=shopper
    )
    assert too_many.status == 409
    removed = await api.patch(
        f"/api/v1/cart/items/{item['id']}", json={"quantity": 0}, token=shopper
    )
    assert removed.status == 200 and removed.json() == EMPTY_CART
    missing = await api.patch(
        f"/api/v1/cart/items/{item['id']}", json={"quantity": 1}, token=shopper
    )
    assert missing.status == 404


async def test_delete_removes_a_line(api: ApiClient, admin: str, shopper: str) -> None:
    first, second = await product(api, admin, price=100), await product(api, admin, price=200)
    for item in (first, second):
        await api.post(
            "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
        )
    response = await api.delete(f"/api/v1/cart/items/{first['id']}", token=shopper)
    assert response.status == 200
    assert [line["product_id"] for line in response.json()["items"]] == [second["id"]]
    assert response.json()["total"] == 200
    again = await api.delete(f"/api/v1/cart/items/{first['id']}", token=shopper)
    assert again.status == 404


async def test_carts_are_private(
    api: ApiClient, admin: str, shopper: str, make_user: UserFactory
) -> None:
    item = await product(api, admin)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
    )
    _, other = await make_user.create("customer")
    assert (await api.get("/api/v1/cart", token=other)).json() == EMPTY_CART


async def test_inactive_products_drop_out_of_the_priced_cart(
    api: ApiClient, admin: str, shopper: str
) -> None:
    kept, dropped = await product(api, admin, price=300), await product(api, admin, price=700)
    for item in (kept, dropped):
        await api.post(
            "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
        )
    await api.delete(f"/api/v1/products/{dropped['id']}", token=admin)
    cart = (await api.get("/api/v1/cart", token=shopper)).json()
    assert [line["product_id"] for line in cart["items"]] == [kept["id"]]
    assert cart["total"] == 300


# ---- promotions on the cart ------------------------------------------------------------------


async def test_percent_promotion_rounds_half_even_per_line(
    api: ApiClient, admin: str, shopper: str
) -> None:
    # 10% of 125 = 12.5 → 12; 10% of 135 = 13.5 → 14 (half-even, per line).
    a, b = await product(api, admin, price=125), await product(api, admin, price=135)
    for item in (a, b):
        await api.post(
            "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
        )
    promo = await promotion(api, admin, value=10)
    response = await api.post(
        "/api/v1/cart/promotion", json={"code": promo["code"].lower()}, token=shopper
    )
    assert response.status == 200
    cart = response.json()
    assert [line["line_discount"] for line in cart["items"]] == [12, 14]
    assert cart["discount"] == 26 and cart["total"] == 260 - 26
    assert cart["promotion_code"] == promo["code"]
    assert (await api.get("/api/v1/cart", token=shopper)).json() == cart


async def test_unknown_code_is_404(api: ApiClient, shopper: str) -> None:
    response = await api.post(
        "/api/v1/cart/promotion", json={"code": "NOPE-NOT-HERE"}, token=shopper
    )
    assert response.status == 404


async def test_expired_not_started_and_used_up_codes_are_422(
    api: ApiClient, admin: str, shopper: str, ctx: AppContext
) -> None:
    now = datetime.now(UTC)
    expired = await promotion(
        api,
        admin,
        starts_at=(now - timedelta(days=2)).isoformat(),
        ends_at=(now - timedelta(days=1)).isoformat(),
    )
    future = await promotion(api, admin, starts_at=(now + timedelta(days=1)).isoformat())
    used_up = await promotion(api, admin, usage_limit=1)
    await ctx.pool.execute("UPDATE promotions SET times_used = 1 WHERE id = $1", used_up["id"])
    for promo in (expired, future, used_up):
        response = await api.post(
            "/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper
        )
        assert response.status == 422, (promo, response)


async def test_code_below_its_minimum_is_422(api: ApiClient, admin: str, shopper: str) -> None:
    item = await product(api, admin, price=500)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
    )
    promo = await promotion(api, admin, min_subtotal=1000)
    response = await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    assert response.status == 422
    await api.patch(f"/api/v1/cart/items/{item['id']}", json={"quantity": 2}, token=shopper)
    response = await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    assert response.status == 200 and response.json()["discount"] == 100


async def test_attached_code_stops_applying_when_the_cart_shrinks_below_minimum(
    api: ApiClient, admin: str, shopper: str
) -> None:
    item = await product(api, admin, price=600)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 2}, token=shopper
    )
    promo = await promotion(api, admin, kind="fixed", value=200, min_subtotal=1000)
    applied = await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    assert applied.json()["discount"] == 200
    shrunk = await api.patch(
        f"/api/v1/cart/items/{item['id']}", json={"quantity": 1}, token=shopper
    )
    assert shrunk.json()["discount"] == 0 and shrunk.json()["promotion_code"] is None
    grown = await api.patch(f"/api/v1/cart/items/{item['id']}", json={"quantity": 3}, token=shopper)
    assert grown.json()["discount"] == 200 and grown.json()["promotion_code"] == promo["code"]


async def test_expired_attached_code_is_kept_but_not_applied(
    api: ApiClient, admin: str, shopper: str, ctx: AppContext
) -> None:
    item = await product(api, admin, price=1000)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
    )
    promo = await promotion(api, admin, value=50)
    await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    await ctx.pool.execute(
        "UPDATE promotions SET starts_at = now() - interval '2 days', "
        "ends_at = now() - interval '1 day' WHERE id = $1",
        promo["id"],
    )
    cart = (await api.get("/api/v1/cart", token=shopper)).json()
    assert cart["promotion_code"] is None and cart["total"] == 1000
    await ctx.pool.execute(
        "UPDATE promotions SET ends_at = NULL, starts_at = NULL WHERE id = $1", promo["id"]
    )
    assert (await api.get("/api/v1/cart", token=shopper)).json()["total"] == 500


async def test_delete_promotion_detaches_it(api: ApiClient, admin: str, shopper: str) -> None:
    item = await product(api, admin, price=1000)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 1}, token=shopper
    )
    promo = await promotion(api, admin, value=20)
    await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    response = await api.delete("/api/v1/cart/promotion", token=shopper)
    assert response.status == 200
    assert response.json()["promotion_code"] is None and response.json()["total"] == 1000


async def test_buy_x_get_y_makes_units_free(api: ApiClient, admin: str, shopper: str) -> None:
    item = await product(api, admin, price=300)
    await api.post(
        "/api/v1/cart/items", json={"product_id": item["id"], "quantity": 5}, token=shopper
    )
    promo = await promotion(
        api,
        admin,
        kind="buy_x_get_y",
        value=0,
        buy_quantity=2,
        get_quantity=1,
        product_ids=[item["id"]],
    )
    cart = (
        await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    ).json()
    # 5 units, groups of 2+1: one free unit.
    assert cart["subtotal"] == 1500 and cart["discount"] == 300 and cart["total"] == 1200


# ---- checkout charges what the cart shows -------------------------------------------------------
# The same total and line totals (a fixed discount's odd unit on the same line), and a code the
# cart no longer applies (used up, below its minimum, deleted) does not make the checkout refuse
# a cart that shows it unapplied.


async def add(api: ApiClient, token: str, pid: int, q: int) -> dict[str, Any]:
    r = await api.post("/api/v1/cart/items", json={"product_id": pid, "quantity": q}, token=token)
    assert r.status == 200, r
    return r.json()


async def test_a_fixed_discounts_odd_unit_lands_on_the_same_line_in_cart_and_order(
    api: ApiClient, admin: str, shopper: str
) -> None:
    a = await product(api, admin, price=3)
    b = await product(api, admin, price=3)  # higher id
    promo = await promotion(api, admin, kind="fixed", value=1)
    await add(api, shopper, b["id"], 1)  # added first
    await add(api, shopper, a["id"], 1)
    r = await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    cart = r.json()
    cart_lines = {i["product_id"]: i["line_total"] for i in cart["items"]}
    r = await api.post("/api/v1/orders", json={}, token=shopper)
    assert r.status == 201, r
    order = r.json()
    assert order["total"] == cart["total"]
    order_lines = {i["product_id"]: i["line_total"] for i in order["items"]}
    assert order_lines == cart_lines, (cart_lines, order_lines)


async def test_a_used_up_code_the_cart_shows_unapplied_does_not_block_checkout(
    api: ApiClient, admin: str, shopper: str
) -> None:
    a = await product(api, admin, price=1000)
    promo = await promotion(api, admin, kind="percent", value=10)
    await add(api, shopper, a["id"], 1)
    r = await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    assert r.json()["discount"] == 100
    r = await api.patch(f"/api/v1/promotions/{promo['id']}", json={"usage_limit": 0}, token=admin)
    assert r.status == 200, r
    cart = (await api.get("/api/v1/cart", token=shopper)).json()
    assert cart["promotion_code"] is None and cart["total"] == 1000
    r = await api.post("/api/v1/orders", json={}, token=shopper)
    # The cart says: 1000, no promotion in effect. Checkout should charge that.
    assert r.status == 201, (r.status, r.json())
    assert r.json()["total"] == cart["total"]


async def test_a_code_below_its_minimum_does_not_block_checkout(
    api: ApiClient, admin: str, shopper: str
) -> None:
    a = await product(api, admin, price=1000)
    promo = await promotion(api, admin, kind="percent", value=10, min_subtotal=2000)
    await add(api, shopper, a["id"], 2)
    r = await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    assert r.status == 200 and r.json()["discount"] == 200
    r = await api.patch(f"/api/v1/cart/items/{a['id']}", json={"quantity": 1}, token=shopper)
    cart = r.json()
    assert cart["promotion_code"] is None and cart["total"] == 1000
    r = await api.post("/api/v1/orders", json={}, token=shopper)
    assert r.status == 201, (r.status, r.json())
    assert r.json()["total"] == cart["total"]


async def test_a_deleted_code_does_not_block_checkout(
    api: ApiClient, admin: str, shopper: str
) -> None:
    a = await product(api, admin, price=1000)
    promo = await promotion(api, admin)
    await add(api, shopper, a["id"], 1)
    await api.post("/api/v1/cart/promotion", json={"code": promo["code"]}, token=shopper)
    r = await api.delete(f"/api/v1/promotions/{promo['id']}", token=admin)
    assert r.status == 204
    cart = (await api.get("/api/v1/cart", token=shopper)).json()
    assert cart["promotion_code"] is None and cart["total"] == 1000
    r = await api.post("/api/v1/orders", json={}, token=shopper)
    assert r.status == 201, (r.status, r.json())
    assert r.json()["total"] == cart["total"] and r.json()["promotion_code"] is None
