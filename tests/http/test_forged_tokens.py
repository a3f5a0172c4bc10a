"""Forged, expired and malformed tokens are refused on REST with 401 and `WWW-Authenticate`."""

from __future__ import annotations

from server.context import AppContext
from tests.conftest import ApiClient, UserFactory
from tests.forged_tokens import forged_authorizations


async def test_the_genuine_token_is_accepted(api: ApiClient, make_user: UserFactory) -> None:
    _, token = await make_user.create("customer")
    assert (await api.get("/api/v1/auth/me", token=token)).status == 200
    lowercase_scheme = await api.get(
        "/api/v1/auth/me", headers={"Authorization": f"bearer {token}"}
    )
    assert lowercase_scheme.status == 200


async def test_every_forged_token_is_refused_with_401(
    api: ApiClient, ctx: AppContext, make_user: UserFactory
) -> None:
    user, _ = await make_user.create("customer")
    forged = forged_authorizations(ctx.settings, user.id)
    assert len(forged) >= 20

    accepted = []
    for name, authorization in forged.items():
        response = await api.get("/api/v1/auth/me", headers={"Authorization": authorization})
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status != 401 or not challenge.startswith("Bearer"):
            accepted.append(f"{name}: {response.status} {challenge!r}")
        elif response.headers["Content-Type"] != "application/problem+json":
            accepted.append(f"{name}: not problem+json")
    assert not accepted, accepted


async def test_a_forged_token_is_refused_on_public_routes_too(
    api: ApiClient, ctx: AppContext
) -> None:
    forged = forged_authorizations(ctx.settings, 1)
    for name in ("tampered_role", "alg_none", "expired"):
        response = await api.post(
            "/api/v1/auth/refresh", json={"refresh": "x"}, headers={"Authorization": forged[name]}
        )
        assert response.status == 401, name
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_probes_ignore_the_authorization_header(api: ApiClient, ctx: AppContext) -> None:
    forged = forged_authorizations(ctx.settings, 1)
    response = await api.get("/healthz", headers={"Authorization": forged["garbage"]})
    assert response.status == 200
