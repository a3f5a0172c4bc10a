"""REST catalog: categories (a tree), products (admin CRUD, soft delete, visibility, ETags) and
the product list (filters, sort orders, keyset cursors, bad queries)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import pytest

from server.context import AppContext
from server.services import catalog
from tests.conftest import ApiClient, UserFactory


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def admin(make_user: UserFactory) -> str:
    _, token = await make_user.create("admin")
    return token


@pytest.fixture(scope="module")
async def customer(make_user: UserFactory) -> str:
    _, token = await make_user.create("customer")
    return token


async def create_category(api: ApiClient, admin: str, **body: Any) -> dict[str, Any]:
    body.setdefault("name", unique("Category"))
    response = await api.post("/api/v1/categories", json=body, token=admin)
    assert response.status == 201, response
    return response.json()


async def create_product(api: ApiClient, admin: str, **body: Any) -> dict[str, Any]:
    body = {"sku": unique("SKU"), "name": "Thing", "price": 1000, "stock": 5, **body}
    response = await api.post("/api/v1/products", json=body, token=admin)
    assert response.status == 201, response
    return response.json()


# ---- categories ------------------------------------------------------------------------------


async def test_category_slug_is_derived_from_the_name(api: ApiClient, admin: str) -> None:
    name = f"Café Crème & Co. {uuid.uuid4().hex[:6]}"
    category = await create_category(api, admin, name=name)
    assert category["slug"] == f"cafe-creme-co-{name.rsplit(' ', 1)[1]}"
    assert category["parent_id"] is None and category["name"] == name


async def test_duplicate_slug_is_409(api: ApiClient, admin: str) -> None:
    slug = unique("dup")
    await create_category(api, admin, slug=slug)
    response = await api.post(
        "/api/v1/categories", json={"name": "Other", "slug": slug}, token=admin
    )
    assert response.status == 409
    assert response.headers["Content-Type"] == "application/problem+json"


async def test_unknown_parent_is_422(api: ApiClient, admin: str) -> None:
    response = await api.post(
        "/api/v1/categories", json={"name": "Orphan", "parent_id": 999999}, token=admin
    )
    assert response.status == 422
    assert response.json()["errors"][0]["field"] == "parent_id"


async def test_slug_of_digits_only_is_rejected(api: ApiClient, admin: str) -> None:
    response = await api.post("/api/v1/categories", json={"name": "2024"}, token=admin)
    assert response.status == 422
    response = await api.post(
        "/api/v1/categories", json={"name": "Year", "slug": "2024"}, token=admin
    )
    assert response.status == 422


async def test_a_value_with_a_trailing_newline_is_422_not_stored(
    api: ApiClient, admin: str
) -> None:
    """Python's `$` matches before a final newline; the patterns must not let one through
    (PostgreSQL's checks would answer 500, or the value would be stored and never match)."""
    slug = await api.post(
        "/api/v1/categories", json={"name": "Mugs", "slug": "mugs\n"}, token=admin
    )
    assert slug.status == 422 and slug.json()["errors"][0]["field"] == "slug"
    code = {"code": unique("NL"), "kind": "percent", "value": 10}
    newline = await api.post(
        "/api/v1/promotions", json={**code, "code": code["code"] + "\n"}, token=admin
    )
    assert newline.status == 422
    assert (await api.post("/api/v1/promotions", json=code, token=admin)).status == 201
    hook = {"url": "https://shop.example/hook", "events": ["order.created"]}
    newline = await api.post(
        "/api/v1/webhooks", json={**hook, "url": hook["url"] + "\n"}, token=admin
    )
    assert newline.status == 422
    assert (await api.post("/api/v1/webhooks", json=hook, token=admin)).status == 201


async def test_a_lone_surrogate_is_422_even_after_a_whole_number_float(
    api: ApiClient, admin: str
) -> None:
    """A float like 100.0 sends the body down the second parse (integral floats); it must be as
    strict about text as the first (PostgreSQL cannot store a lone surrogate)."""
    sku = unique("SUR")
    for name in (b'"x\\ud800"', b'"x\xed\xa0\x80"'):  # an escape, and its raw UTF-8 form
        body = (
            b'{"price": 100.0, "sku": "' + sku.encode() + b'", "name": ' + name + b', "stock": 1}'
        )
        response = await api.post(
            "/api/v1/products", body=body, token=admin, headers={"Content-Type": "application/json"}
        )
        assert response.status == 400, response
        assert response.headers["Content-Type"] == "application/problem+json"
    fine = b'{"price": 100.0, "sku": "' + sku.encode() + b'", "name": "ok", "stock": 1}'
    created = await api.post(
        "/api/v1/products", body=fine, token=admin, headers={"Content-Type": "application/json"}
    )
    assert created.status == 201 and created.json()["price"] == 100


async def test_category_cannot_be_moved_under_its_descendant(api: ApiClient, admin: str) -> None:
    root = await create_category(api, admin)
    child = await create_category(api, admin, parent_id=root["id"])
    grandchild = await create_category(api, admin, parent_id=child["id"])
    for parent in (grandchild["id"], root["id"]):
        response = await api.patch(
            f"/api/v1/categories/{root['id']}", json={"parent_id": parent}, token=admin
        )
        assert response.status == 422, response
    moved = await api.patch(
        f"/api/v1/categories/{grandchild['id']}",
        json={"parent_id": None, "name": "Renamed"},
        token=admin,
    )
    assert moved.status == 200
    assert moved.json() == {**grandchild, "parent_id": None, "name": "Renamed"}


async def test_deleting_a_category_makes_its_children_roots(api: ApiClient, admin: str) -> None:
    root = await create_category(api, admin)
    child = await create_category(api, admin, parent_id=root["id"])
    assert (await api.delete(f"/api/v1/categories/{root['id']}", token=admin)).status == 204
    listed = {c["id"]: c for c in (await api.get("/api/v1/categories")).json()["items"]}
    assert root["id"] not in listed
    assert listed[child["id"]]["parent_id"] is None
    assert (await api.delete(f"/api/v1/categories/{root['id']}", token=admin)).status == 404


async def test_category_writes_need_an_admin(api: ApiClient, customer: str) -> None:
    assert (await api.post("/api/v1/categories", json={"name": "X"})).status == 401
    assert (await api.post("/api/v1/categories", json={"name": "X"}, token=customer)).status == 403


# ---- products --------------------------------------------------------------------------------


async def test_create_product_returns_it_with_store_currency(api: ApiClient, admin: str) -> None:
    product = await create_product(api, admin, description="soft and warm")
    assert product["currency"] == "USD" and product["is_active"] is True
    assert product["description"] == "soft and warm" and product["category_id"] is None
    assert set(product) == {
        "id",
        "sku",
        "name",
        "description",
        "category_id",
        "price",
        "currency",
        "stock",
        "is_active",
        "created_at",
        "updated_at",
        "options",
        "variants",
    }
    # Without variants in the body, a product is one variant carrying its sku and stock.
    assert product["options"] == []
    assert [(v["sku"], v["options"], v["stock"], v["price"]) for v in product["variants"]] == [
        (product["sku"], {}, product["stock"], product["price"])
    ]


async def test_duplicate_sku_is_409(api: ApiClient, admin: str) -> None:
    product = await create_product(api, admin)
    response = await api.post(
        "/api/v1/products",
        token=admin,
        json={"sku": product["sku"], "name": "Again", "price": 1, "stock": 1},
    )
    assert response.status == 409


@pytest.mark.parametrize(
    "body",
    [
        {"id": 5},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"price": -1},
        {"price": 1.5},
        {"currency": "EUR"},
        {"category_id": 987654},
        {"name": ""},
        {"stock": -3},
    ],
)
async def test_invalid_or_read_only_product_fields_are_422(
    api: ApiClient, admin: str, body: dict[str, Any]
) -> None:
    response = await api.post(
        "/api/v1/products",
        token=admin,
        json={"sku": unique("SKU"), "name": "N", "price": 1, "stock": 1, **body},
    )
    assert response.status == 422, response
    assert response.json()["errors"]


async def test_product_get_has_etag_and_cache_control(api: ApiClient, admin: str) -> None:
    product = await create_product(api, admin)
    first = await api.get(f"/api/v1/products/{product['id']}")
    assert first.status == 200 and first.json() == product
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["Cache-Control"] == "public, max-age=60"
    again = await api.get(f"/api/v1/products/{product['id']}", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    patched = await api.patch(
        f"/api/v1/products/{product['id']}", json={"price": 1234}, token=admin
    )
    assert patched.status == 200 and patched.json()["price"] == 1234
    changed = await api.get(f"/api/v1/products/{product['id']}", headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag


async def test_etag_changes_when_checkout_moves_stock(
    api: ApiClient, admin: str, ctx: AppContext
) -> None:
    product = await create_product(api, admin)
    etag = (await api.get(f"/api/v1/products/{product['id']}")).headers["ETag"]
    # What checkout does: take a variant's stock in SQL (the product row untouched), then retire
    # that product.
    await ctx.pool.execute(
        "UPDATE product_variants SET stock = stock - 1 WHERE product_id = $1", product["id"]
    )
    await catalog.stock_changed(ctx, [product["id"]])
    after = await api.get(f"/api/v1/products/{product['id']}", headers={"If-None-Match": etag})
    assert after.status == 200 and after.json()["stock"] == product["stock"] - 1


async def test_soft_deleted_product_is_invisible_except_to_admins(
    api: ApiClient, admin: str, customer: str
) -> None:
    product = await create_product(api, admin)
    assert (await api.delete(f"/api/v1/products/{product['id']}", token=admin)).status == 204
    assert (await api.get(f"/api/v1/products/{product['id']}")).status == 404
    assert (await api.get(f"/api/v1/products/{product['id']}", token=customer)).status == 404
    seen = await api.get(f"/api/v1/products/{product['id']}", token=admin)
    assert seen.status == 200 and seen.json()["is_active"] is False
    assert seen.headers["Cache-Control"] == "private, no-cache"
    reactivated = await api.patch(
        f"/api/v1/products/{product['id']}", json={"is_active": True}, token=admin
    )
    assert reactivated.status == 200
    assert (await api.get(f"/api/v1/products/{product['id']}")).status == 200


async def test_unknown_and_oversized_product_ids_are_404(api: ApiClient, admin: str) -> None:
    for path in ("/api/v1/products/999999999", "/api/v1/products/99999999999999999999999"):
        assert (await api.get(path)).status == 404
        assert (await api.patch(path, json={"price": 1}, token=admin)).status == 404
        assert (await api.delete(path, token=admin)).status == 404


async def test_product_views_are_counted(api: ApiClient, admin: str, ctx: AppContext) -> None:
    product = await create_product(api, admin)
    recorded: list[int] = []
    original = ctx.record_product_view
    ctx.record_product_view = recorded.append  # type: ignore[method-assign, assignment]
    try:
        await api.get(f"/api/v1/products/{product['id']}")
        await api.get(f"/api/v1/products/{product['id']}")
    finally:
        ctx.record_product_view = original  # type: ignore[method-assign]
    assert recorded == [product["id"], product["id"]]


# ---- listing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def shelf(api: ApiClient, admin: str) -> dict[str, Any]:
    """A category tree with products: clothes > shirts > linen; plus a sibling, books."""
    clothes = await create_category(api, admin, name=unique("Clothes"))
    shirts = await create_category(api, admin, name=unique("Shirts"), parent_id=clothes["id"])
    linen = await create_category(api, admin, name=unique("Linen"), parent_id=shirts["id"])
    books = await create_category(api, admin, name=unique("Books"))
    specs = [
        (clothes, "Wool coat", "warm winter coat", 15000, 3),
        (shirts, "Oxford shirt", "cotton shirt with buttons", 4500, 0),
        (linen, "Linen shirt", "light summer shirt", 5500, 9),
        (linen, "Linen trousers", "light summer trousers", 6500, 2),
        (books, "Summer reading", "a novel", 1500, 40),
        (books, "Cookbook", "recipes for winter", 2500, 1),
    ]
    products = [
        await create_product(
            api, admin, category_id=c["id"], name=n, description=d, price=p, stock=s
        )
        for c, n, d, p, s in specs
    ]
    hidden = await create_product(
        api, admin, category_id=linen["id"], name="Hidden linen", price=5000, is_active=False
    )
    return {
        "clothes": clothes,
        "shirts": shirts,
        "linen": linen,
        "books": books,
        "products": products,
        "hidden": hidden,
    }


def names(response: Any) -> list[str]:
    return [p["name"] for p in response.json()["items"]]


async def test_category_filter_includes_descendants(api: ApiClient, shelf: dict[str, Any]) -> None:
    by_id = await api.get(f"/api/v1/products?category={shelf['clothes']['id']}&sort=name")
    assert names(by_id) == ["Linen shirt", "Linen trousers", "Oxford shirt", "Wool coat"]
    by_slug = await api.get(f"/api/v1/products?category={shelf['shirts']['slug']}&sort=name")
    assert names(by_slug) == ["Linen shirt", "Linen trousers", "Oxford shirt"]
    unknown = await api.get("/api/v1/products?category=no-such-category")
    assert unknown.status == 200 and unknown.json() == {"items": [], "next_cursor": None}


async def test_full_text_search_over_name_and_description(
    api: ApiClient, shelf: dict[str, Any]
) -> None:
    books = shelf["books"]["id"]
    clothes = shelf["clothes"]["id"]
    winter = await api.get(f"/api/v1/products?q=winter&category={books}")
    assert names(winter) == ["Cookbook"]
    query = urlencode({"q": "summer -trousers", "category": clothes, "sort": "name"})
    summer = await api.get(f"/api/v1/products?{query}")
    assert names(summer) == ["Linen shirt"]


async def test_price_bounds_are_inclusive_and_in_stock_filters(
    api: ApiClient, shelf: dict[str, Any]
) -> None:
    clothes = shelf["clothes"]["id"]
    ranged = await api.get(
        f"/api/v1/products?category={clothes}&min_price=4500&max_price=5500&sort=price"
    )
    assert names(ranged) == ["Oxford shirt", "Linen shirt"]
    stocked = await api.get(f"/api/v1/products?category={clothes}&in_stock=true&sort=price")
    assert names(stocked) == ["Linen shirt", "Linen trousers", "Wool coat"]


async def test_inactive_products_are_listed_for_admins_only(
    api: ApiClient, admin: str, shelf: dict[str, Any]
) -> None:
    linen = shelf["linen"]["id"]
    assert "Hidden linen" not in names(await api.get(f"/api/v1/products?category={linen}"))
    assert "Hidden linen" in names(await api.get(f"/api/v1/products?category={linen}", token=admin))


@pytest.mark.parametrize(
    ("sort", "key", "reverse"),
    [
        ("price", "price", False),
        ("-price", "price", True),
        ("name", "name", False),
        ("created", "created_at", False),
        ("-created", "created_at", True),
    ],
)
async def test_cursor_pages_walk_the_whole_sorted_list(
    api: ApiClient, shelf: dict[str, Any], sort: str, key: str, reverse: bool
) -> None:
    category = shelf["clothes"]["id"]
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = f"/api/v1/products?category={category}&sort={sort}&limit=1"
        response = await api.get(query + (f"&cursor={cursor}" if cursor else ""))
        assert response.status == 200
        page = response.json()
        seen.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and len({p["id"] for p in seen}) == 4
    expected = sorted(seen, key=lambda p: (p[key], p["id"]), reverse=reverse)
    assert seen == expected


async def test_default_sort_is_newest_first(api: ApiClient, shelf: dict[str, Any]) -> None:
    listed = await api.get(f"/api/v1/products?category={shelf['books']['id']}")
    assert names(listed) == ["Cookbook", "Summer reading"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=abc",
        "sort=cheapest",
        "min_price=-1",
        "max_price=x",
        "in_stock=maybe",
        "cursor=not-a-cursor",
        "cursor=%00%01",
        "cursor=%FF%FE",
        "cursor=%E2%82%AC",
        "q=%00",
        "category=%00",
        "min_price=99999999999999999999",
    ],
)
async def test_malformed_query_is_400(api: ApiClient, query: str) -> None:
    response = await api.get(f"/api/v1/products?{query}")
    assert response.status == 400, response
    assert response.headers["Content-Type"] == "application/problem+json"
    field = query.split("=")[0]
    assert field in [e["field"] for e in response.json()["errors"]], response.json()


async def test_cursor_of_another_sort_is_400(api: ApiClient, shelf: dict[str, Any]) -> None:
    first = await api.get(f"/api/v1/products?category={shelf['clothes']['id']}&sort=price&limit=1")
    cursor = first.json()["next_cursor"]
    other = await api.get(
        f"/api/v1/products?category={shelf['clothes']['id']}&sort=name&cursor={cursor}"
    )
    assert other.status == 400
