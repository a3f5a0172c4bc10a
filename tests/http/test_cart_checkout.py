"""Checkout charges what the cart shows: the same total, the same line totals (a fixed
discount's odd unit on the same line), and a code the cart no longer applies (used up, below
its minimum, deleted) does not make the checkout refuse a cart that shows it unapplied."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import ApiClient, UserFactory


@pytest.fixture(scope="module")
async def admin(make_user: UserFactory) -> str:
    _, token = await make_user.create("admin")
    return token


@pytest.fixture
async def shopper(make_user: UserFactory) -> str:
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
    r = await api.post("/api/v1/products", json=body, token=admin)
    assert r.status == 201, r
    return r.json()


async def promotion(api: ApiClient, admin: str, **body: Any) -> dict[str, Any]:
    body = {"code": f"CHK{uuid.uuid4().hex[:8]}", "kind": "percent", "value": 10, **body}
    r = await api.post("/api/v1/promotions", json=body, token=admin)
    assert r.status == 201, r
    return r.json()


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
