"""What shared caches (a CDN, a corporate proxy) are told: a product page is public and varies
by Authorization, an admin's view of it is private, and account and token answers are never
stored."""

from __future__ import annotations

import uuid

from tests.conftest import ApiClient, UserFactory


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_an_admins_product_view_is_private_and_the_public_one_varies_by_authorization(
    api: ApiClient, make_user: UserFactory
) -> None:
    _, admin = await make_user.create("admin")
    _, customer = await make_user.create("customer")
    body = {
        "sku": unique("HDR"),
        "name": "Header shirt",
        "price": 1000,
        "options": [{"name": "size", "values": ["S", "M"]}],
        "variants": [
            {"sku": unique("HDR-S"), "stock": 3, "options": {"size": "S"}},
            {"sku": unique("HDR-M"), "stock": 3, "options": {"size": "M"}, "is_active": False},
        ],
    }
    created = await api.post("/api/v1/products", json=body, token=admin)
    assert created.status == 201, created
    path = f"/api/v1/products/{created.json()['id']}"

    answers = [await api.get(path) for _ in range(3)]  # the later ones may be replays
    as_customer = await api.get(path, token=customer)
    as_admin = await api.get(path, token=admin)

    assert len(as_admin.json()["variants"]) == 2  # the inactive variant: admins only
    assert as_admin.headers["Cache-Control"] == "private, no-cache"
    for public in [*answers, as_customer]:
        assert len(public.json()["variants"]) == 1
        assert public.headers["Cache-Control"] == "public, max-age=60"
        assert "Authorization" in [v.strip() for v in public.headers["Vary"].split(",")]


async def test_account_and_token_answers_are_never_stored(
    api: ApiClient, make_user: UserFactory
) -> None:
    _, customer = await make_user.create("customer")
    me = [await api.get("/api/v1/auth/me", token=customer) for _ in range(3)]  # replays too
    email = f"{unique('hdr')}@example.com"
    credentials = {"email": email, "password": "correct horse battery"}
    registered = await api.post("/api/v1/auth/register", json=credentials)
    login = await api.post("/api/v1/auth/login", json=credentials)
    refreshed = await api.post("/api/v1/auth/refresh", json={"refresh": login.json()["refresh"]})

    assert [r.status for r in me] == [200, 200, 200]
    assert {r.headers["Cache-Control"] for r in me} == {"private, no-store"}
    for grant in (registered, login, refreshed):
        assert grant.status in (200, 201), grant.json()
        assert grant.headers["Cache-Control"] == "no-store"
        assert grant.headers["Pragma"] == "no-cache"
