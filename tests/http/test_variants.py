"""Product options and variants over REST: creating them, the cart choosing a variant, the
`option=` list filter, per-variant stock and prices, and the refusals that change nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from server.context import AppContext
from tests.conftest import ApiClient, UserFactory

SIZES = [{"name": "size", "values": ["S", "M", "L"]}]


@pytest.fixture(scope="module")
async def admin(make_user: UserFactory) -> str:
    return (await make_user.create("admin"))[1]


@pytest.fixture
async def shopper(make_user: UserFactory) -> str:
    return (await make_user.create("customer"))[1]


def sku() -> str:
    return f"VAR-{uuid.uuid4().hex[:10]}"


async def tee(api: ApiClient, admin: str, **body: Any) -> dict[str, Any]:
    """A T-shirt in S (3 in stock), M (0) and L (5, at its own price 2500)."""
    base = sku()
    body = {
        "sku": base,
        "name": f"Tee {base}",
        "price": 2000,
        "options": SIZES,
        "variants": [
            {"sku": f"{base}-S", "options": {"size": "S"}, "stock": 3},
            {"sku": f"{base}-M", "options": {"size": "M"}, "stock": 0},
            {"sku": f"{base}-L", "options": {"size": "L"}, "stock": 5, "price": 2500},
        ],
        **body,
    }
    response = await api.post("/api/v1/products", json=body, token=admin)
    assert response.status == 201, response.json()
    return response.json()


def variant(product: dict[str, Any], size: str) -> dict[str, Any]:
    return next(v for v in product["variants"] if v["options"] == {"size": size})


async def test_a_product_with_variants_shows_each_with_its_stock_and_price(
    api: ApiClient, admin: str
) -> None:
    product = await tee(api, admin)
    assert product["options"] == SIZES
    assert [(v["options"]["size"], v["stock"], v["price"]) for v in product["variants"]] == [
        ("S", 3, 2000),
        ("M", 0, 2000),
        ("L", 5, 2500),
    ]
    assert product["stock"] == 8  # the sum over its active variants
    public = (await api.get(f"/api/v1/products/{product['id']}")).json()
    assert public["variants"] == product["variants"]


async def test_variant_options_must_match_the_products_options(api: ApiClient, admin: str) -> None:
    base = sku()
    for variants, field in (
        ([{"sku": base + "a", "options": {"size": "XL"}, "stock": 1}], "variants[0].options"),
        ([{"sku": base + "b", "options": {"colour": "red"}, "stock": 1}], "variants[0].options"),
        ([{"sku": base + "c", "options": {}, "stock": 1}], "variants[0].options"),
    ):
        response = await api.post(
            "/api/v1/products",
            json={"sku": base, "name": "Bad", "price": 1, "options": SIZES, "variants": variants},
            token=admin,
        )
        assert response.status == 422, response.json()
        assert response.json()["errors"][0]["field"] == field
    without_variants = await api.post(
        "/api/v1/products",
        json={"sku": base, "name": "Bad", "price": 1, "stock": 1, "options": SIZES},
        token=admin,
    )
    assert without_variants.status == 422
    both = await api.post(
        "/api/v1/products",
        json={
            "sku": base,
            "name": "Bad",
            "price": 1,
            "stock": 1,
            "variants": [{"sku": base + "d", "stock": 1}],
        },
        token=admin,
    )
    assert both.status == 422 and both.json()["errors"][0]["field"] == "stock"
    # Nothing of any refused product was written.
    listed = await api.get(f"/api/v1/products?q={base}", token=admin)
    assert listed.json()["items"] == []


async def test_adding_a_variant_checks_its_options_and_its_combination(
    api: ApiClient, admin: str
) -> None:
    product = await tee(api, admin)
    path = f"/api/v1/products/{product['id']}/variants"
    duplicate = await api.post(
        path, json={"sku": sku(), "options": {"size": "S"}, "stock": 1}, token=admin
    )
    assert duplicate.status == 409
    mismatch = await api.post(
        path, json={"sku": sku(), "options": {"size": "XS"}, "stock": 1}, token=admin
    )
    assert mismatch.status == 422 and mismatch.json()["errors"][0]["field"] == "options"
    taken = await api.post(
        path, json={"sku": variant(product, "S")["sku"], "options": {}, "stock": 1}, token=admin
    )
    assert taken.status in (409, 422)
    after = (await api.get(f"/api/v1/products/{product['id']}", token=admin)).json()
    assert len(after["variants"]) == 3


async def test_a_variant_price_override_and_its_removal(api: ApiClient, admin: str) -> None:
    product = await tee(api, admin)
    large = variant(product, "L")
    path = f"/api/v1/products/{product['id']}/variants/{large['id']}"
    patched = await api.patch(path, json={"price": None}, token=admin)
    assert patched.status == 200
    assert patched.json()["price"] == 2000 and patched.json()["price_override"] is None
    body = (await api.get(f"/api/v1/products/{product['id']}")).json()
    assert variant(body, "L")["price"] == 2000  # the product page follows at once
    assert (await api.patch(path, json={"stock": -1}, token=admin)).status == 422


async def test_a_deactivated_variant_leaves_the_public_body_and_the_stock(
    api: ApiClient, admin: str, shopper: str
) -> None:
    product = await tee(api, admin)
    small = variant(product, "S")
    path = f"/api/v1/products/{product['id']}/variants/{small['id']}"
    assert (await api.delete(path, token=admin)).status == 204
    public = (await api.get(f"/api/v1/products/{product['id']}")).json()
    assert [v["options"]["size"] for v in public["variants"]] == ["M", "L"]
    assert public["stock"] == 5
    seen_by_admin = (await api.get(f"/api/v1/products/{product['id']}", token=admin)).json()
    assert len(seen_by_admin["variants"]) == 3
    refused = await api.post(
        "/api/v1/cart/items", json={"variant_id": small["id"], "quantity": 1}, token=shopper
    )
    assert refused.status == 404


async def test_stock_of_a_product_with_variants_is_set_per_variant(
    api: ApiClient, admin: str
) -> None:
    product = await tee(api, admin)
    refused = await api.patch(f"/api/v1/products/{product['id']}", json={"stock": 10}, token=admin)
    assert refused.status == 422 and refused.json()["errors"][0]["field"] == "stock"
    unchanged = (await api.get(f"/api/v1/products/{product['id']}", token=admin)).json()
    assert unchanged["stock"] == 8


async def test_changing_options_must_keep_every_variant_valid(api: ApiClient, admin: str) -> None:
    product = await tee(api, admin)
    path = f"/api/v1/products/{product['id']}"
    dropped = await api.patch(
        path, json={"options": [{"name": "size", "values": ["S", "M"]}]}, token=admin
    )
    assert dropped.status == 422  # the L variant would have no valid size
    grown = await api.patch(
        path, json={"options": [{"name": "size", "values": ["S", "M", "L", "XL"]}]}, token=admin
    )
    assert grown.status == 200 and grown.json()["options"][0]["values"][-1] == "XL"


async def test_the_cart_chooses_a_variant_by_id_or_by_options(
    api: ApiClient, admin: str, shopper: str
) -> None:
    product = await tee(api, admin)
    by_options = await api.post(
        "/api/v1/cart/items",
        json={"product_id": product["id"], "options": {"size": "L"}, "quantity": 2},
        token=shopper,
    )
    assert by_options.status == 200
    by_id = await api.post(
        "/api/v1/cart/items",
        json={"variant_id": variant(product, "S")["id"], "quantity": 1},
        token=shopper,
    )
    cart = by_id.json()
    assert [(i["options"], i["sku"], i["unit_price"], i["quantity"]) for i in cart["items"]] == [
        ({"size": "L"}, variant(product, "L")["sku"], 2500, 2),
        ({"size": "S"}, variant(product, "S")["sku"], 2000, 1),
    ]
    assert cart["total"] == 7000


@pytest.mark.parametrize(
    "line, status, field",
    [
        ({}, 422, "variant_id"),  # which size?
        ({"options": {"size": "XL"}}, 422, "options"),
        ({"options": {"colour": "red"}}, 422, "options"),
        ({"variant_id": 2**62}, 404, None),
    ],
)
async def test_the_cart_refuses_an_ambiguous_or_unknown_variant(
    api: ApiClient,
    admin: str,
    shopper: str,
    line: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    product = await tee(api, admin)
    response = await api.post(
        "/api/v1/cart/items",
        json={"product_id": product["id"], "quantity": 1, **line},
        token=shopper,
    )
    assert response.status == status, response.json()
    if field is not None:
        assert response.json()["errors"][0]["field"] == field
    assert (await api.get("/api/v1/cart", token=shopper)).json()["items"] == []


async def test_a_variant_of_another_product_is_refused(
    api: ApiClient, admin: str, shopper: str
) -> None:
    one, other = await tee(api, admin), await tee(api, admin)
    response = await api.post(
        "/api/v1/cart/items",
        json={"product_id": one["id"], "variant_id": variant(other, "S")["id"], "quantity": 1},
        token=shopper,
    )
    assert response.status == 422 and response.json()["errors"][0]["field"] == "variant_id"


async def test_each_variant_is_held_to_its_own_stock(
    api: ApiClient, admin: str, shopper: str
) -> None:
    product = await tee(api, admin)
    out = await api.post(
        "/api/v1/cart/items",
        json={"variant_id": variant(product, "M")["id"], "quantity": 1},
        token=shopper,
    )
    assert out.status == 409  # M has none, although the product has 8
    over = await api.post(
        "/api/v1/cart/items",
        json={"variant_id": variant(product, "S")["id"], "quantity": 4},
        token=shopper,
    )
    assert over.status == 409


async def test_cart_lines_of_one_product_are_named_by_variant(
    api: ApiClient, admin: str, shopper: str
) -> None:
    product = await tee(api, admin)
    for size in ("S", "L"):
        await api.post(
            "/api/v1/cart/items",
            json={"variant_id": variant(product, size)["id"], "quantity": 1},
            token=shopper,
        )
    line = f"/api/v1/cart/items/{product['id']}"
    ambiguous = await api.patch(line, json={"quantity": 2}, token=shopper)
    assert ambiguous.status == 422 and ambiguous.json()["errors"][0]["field"] == "variant_id"
    large = variant(product, "L")["id"]
    patched = await api.patch(f"{line}?variant_id={large}", json={"quantity": 3}, token=shopper)
    assert [(i["variant_id"], i["quantity"]) for i in patched.json()["items"]] == [
        (variant(product, "S")["id"], 1),
        (large, 3),
    ]
    removed = await api.delete(f"{line}?variant_id={large}", token=shopper)
    assert [i["variant_id"] for i in removed.json()["items"]] == [variant(product, "S")["id"]]
    # One line of the product left: the path alone names it again.
    assert (await api.delete(line, token=shopper)).json()["items"] == []


async def test_lists_filter_by_option_values_and_variant_stock(
    api: ApiClient, admin: str, ctx: AppContext
) -> None:
    word = f"opt{uuid.uuid4().hex[:8]}"
    shirt = await tee(api, admin, name=f"Shirt {word}")
    mug_sku = sku()
    mug = (
        await api.post(
            "/api/v1/products",
            json={"sku": mug_sku, "name": f"Mug {word}", "price": 900, "stock": 4},
            token=admin,
        )
    ).json()

    async def ids(query: str) -> list[int]:
        response = await api.get(f"/api/v1/products?q={word}&{query}", token=admin)
        assert response.status == 200, response.json()
        return sorted(p["id"] for p in response.json()["items"])

    assert await ids("option=size:M") == [shirt["id"]]
    assert await ids("option=size:M&in_stock=true") == []  # M is out of stock
    assert await ids("option=size:L&in_stock=true") == [shirt["id"]]
    assert await ids("option=size:XXL") == []
    assert await ids("in_stock=true") == sorted([shirt["id"], mug["id"]])
    for bad in ("option=size", "option=:M", "option=size:M&option=size:L"):
        response = await api.get(f"/api/v1/products?{bad}")
        assert response.status == 400 and response.json()["errors"][0]["field"] == "option"
