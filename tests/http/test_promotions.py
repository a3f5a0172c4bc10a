"""REST promotions administration: validation, case-insensitive unique codes, pagination."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import ApiClient, UserFactory


@pytest.fixture(scope="module")
async def admin(make_user: UserFactory) -> str:
    _, token = await make_user.create("admin")
    return token


def code() -> str:
    return f"Promo{uuid.uuid4().hex[:8]}"


async def create(api: ApiClient, admin: str, **body: Any) -> dict[str, Any]:
    body = {"code": code(), "kind": "percent", "value": 15, **body}
    response = await api.post("/api/v1/promotions", json=body, token=admin)
    assert response.status == 201, response
    return response.json()


async def test_create_returns_the_full_promotion(api: ApiClient, admin: str) -> None:
    promo = await create(
        api,
        admin,
        min_subtotal=500,
        product_ids=[1, 2],
        starts_at="2030-01-01T00:00:00+02:00",
        ends_at="2030-02-01T00:00:00Z",
        usage_limit=100,
    )
    assert promo == {
        "id": promo["id"],
        "code": promo["code"],
        "kind": "percent",
        "value": 15,
        "buy_quantity": None,
        "get_quantity": None,
        "min_subtotal": 500,
        "product_ids": [1, 2],
        "category_ids": None,
        "starts_at": "2029-12-31T22:00:00Z",
        "ends_at": "2030-02-01T00:00:00Z",
        "usage_limit": 100,
        "times_used": 0,
    }


async def test_codes_are_unique_ignoring_case(api: ApiClient, admin: str) -> None:
    promo = await create(api, admin)
    response = await api.post(
        "/api/v1/promotions",
        token=admin,
        json={"code": promo["code"].upper(), "kind": "fixed", "value": 1},
    )
    assert response.status == 409


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "percent", "value": 0},
        {"kind": "percent", "value": 101},
        {"kind": "fixed", "value": 0},
        {"kind": "buy_x_get_y", "buy_quantity": 2},
        {"kind": "buy_x_get_y", "buy_quantity": 2, "get_quantity": 1, "value": 5},
        {"kind": "percent", "value": 5, "get_quantity": 1},
        {
            "kind": "percent",
            "value": 5,
            "starts_at": "2030-01-02T00:00:00Z",
            "ends_at": "2030-01-01T00:00:00Z",
        },
        {"kind": "percent", "value": 5, "starts_at": "2030-01-02T00:00:00"},
        {"kind": "bogus", "value": 5},
        {"kind": "percent", "value": 5, "times_used": 3},
        {"kind": "percent", "value": 5, "id": 7},
    ],
)
async def test_invalid_promotions_are_422(api: ApiClient, admin: str, body: dict[str, Any]) -> None:
    response = await api.post("/api/v1/promotions", json={"code": code(), **body}, token=admin)
    assert response.status == 422, response
    assert response.json()["errors"]


async def test_patch_is_validated_on_the_merged_promotion(api: ApiClient, admin: str) -> None:
    promo = await create(api, admin, value=30)
    to_bxgy = await api.patch(
        f"/api/v1/promotions/{promo['id']}", token=admin, json={"kind": "buy_x_get_y"}
    )
    assert to_bxgy.status == 422  # needs quantities, and value 0
    ok = await api.patch(
        f"/api/v1/promotions/{promo['id']}",
        token=admin,
        json={"kind": "buy_x_get_y", "value": 0, "buy_quantity": 3, "get_quantity": 1},
    )
    assert ok.status == 200
    assert ok.json() == {
        **promo,
        "kind": "buy_x_get_y",
        "value": 0,
        "buy_quantity": 3,
        "get_quantity": 1,
    }
    cleared = await api.patch(
        f"/api/v1/promotions/{promo['id']}",
        token=admin,
        json={"kind": "fixed", "value": 250, "buy_quantity": None, "get_quantity": None},
    )
    assert cleared.status == 200 and cleared.json()["buy_quantity"] is None


async def test_delete_and_unknown_ids(api: ApiClient, admin: str) -> None:
    promo = await create(api, admin)
    assert (await api.delete(f"/api/v1/promotions/{promo['id']}", token=admin)).status == 204
    assert (await api.delete(f"/api/v1/promotions/{promo['id']}", token=admin)).status == 404
    assert (
        await api.patch(f"/api/v1/promotions/{promo['id']}", json={"value": 5}, token=admin)
    ).status == 404


async def test_list_pages_through_every_promotion(api: ApiClient, admin: str) -> None:
    created = [await create(api, admin) for _ in range(3)]
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        path = "/api/v1/promotions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get(path, token=admin)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [p["id"] for p in seen]
    assert ids == sorted(ids) and {p["id"] for p in created} <= set(ids)
    assert (await api.get("/api/v1/promotions?cursor=%%%", token=admin)).status == 400


async def test_promotions_are_for_admins_only(api: ApiClient, make_user: UserFactory) -> None:
    _, customer = await make_user.create("customer")
    assert (await api.get("/api/v1/promotions")).status == 401
    assert (await api.get("/api/v1/promotions", token=customer)).status == 403
    response = await api.post(
        "/api/v1/promotions", token=customer, json={"code": code(), "kind": "percent", "value": 5}
    )
    assert response.status == 403
