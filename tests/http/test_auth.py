"""Accounts over REST: register, login, refresh rotation with reuse detection, logout, me."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import pytest

from server.context import AppContext
from server.db import users
from tests.conftest import ApiClient, Response, UserFactory
from tests.refresh_race_support import rotation_held, wait_for_lock_waiters

PASSWORD = "correct horse battery"
AUTH = "/api/v1/auth"


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


async def register(
    api: ApiClient, email: str | None = None, password: str = PASSWORD, **extra: object
) -> Response:
    return await api.post(
        f"{AUTH}/register",
        json={"email": new_email() if email is None else email, "password": password, **extra},
    )


async def login(api: ApiClient, email: str, password: str = PASSWORD) -> Response:
    return await api.post(f"{AUTH}/login", json={"email": email, "password": password})


async def refresh(api: ApiClient, token: str) -> Response:
    return await api.post(f"{AUTH}/refresh", json={"refresh": token})


def assert_problem(response: Response, status: int) -> dict[str, object]:
    assert response.status == status, response
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    return body


def field_errors(response: Response) -> set[str]:
    return {e["field"] for e in response.json().get("errors", [])}


# ---- register -------------------------------------------------------------------------------


async def test_register_creates_a_customer_and_signs_it_in(api: ApiClient) -> None:
    local = f"Ada.Lovelace-{uuid.uuid4().hex[:8]}"
    response = await register(api, f"  {local}@Example.COM ", name="Ada")

    assert response.status == 201, response
    body = response.json()
    assert set(body) == {"user", "access", "refresh"}
    user = body["user"]
    assert set(user) == {"id", "email", "name", "role", "created_at"}
    assert user["email"] == f"{local.lower()}@example.com"
    assert user["name"] == "Ada" and user["role"] == "customer" and isinstance(user["id"], int)
    created = datetime.fromisoformat(user["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60

    me = await api.get(f"{AUTH}/me", token=body["access"])
    assert me.status == 200 and me.json() == user


async def test_register_rejects_a_password_shorter_than_ten_characters(api: ApiClient) -> None:
    response = await register(api, password="nine char")
    assert_problem(response, 422)
    assert field_errors(response) == {"password"}
    assert (await register(api, password="ten chars!")).status == 201


@pytest.mark.parametrize(
    "email",
    [
        "plainaddress",
        "no-at.example.com",
        "two@@example.com",
        "spaces in@example.com",
        "nodot@localhost",
        "",
        "a@b.c.",
    ],
)
async def test_register_rejects_an_invalid_email(api: ApiClient, email: str) -> None:
    response = await register(api, email)
    assert_problem(response, 422)
    assert field_errors(response) == {"email"}


async def test_register_rejects_a_taken_email_whatever_its_case(api: ApiClient) -> None:
    email = new_email()
    assert (await register(api, email)).status == 201
    response = await register(api, email.upper())
    assert_problem(response, 409)


@pytest.mark.parametrize(
    "field,value",
    [
        ("role", "admin"),
        ("id", 1),
        ("user_id", 1),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("password_hash", "x"),
    ],
)
async def test_register_rejects_read_only_and_unknown_fields_without_applying_them(
    api: ApiClient, ctx: AppContext, field: str, value: object
) -> None:
    email = new_email()
    response = await register(api, email, **{field: value})

    assert_problem(response, 422)
    assert field_errors(response) == {field}
    assert await users.get_by_email(ctx.pool, email) is None


async def test_register_requires_email_and_password(api: ApiClient) -> None:
    response = await api.post(f"{AUTH}/register", json={"email": new_email()})
    assert_problem(response, 422)
    assert field_errors(response) == {"password"}


async def test_register_refuses_wrong_types(api: ApiClient) -> None:
    response = await api.post(
        f"{AUTH}/register", json={"email": new_email(), "password": 12345678901}
    )
    assert_problem(response, 422)
    assert field_errors(response) == {"password"}


# ---- login ----------------------------------------------------------------------------------


async def test_login_returns_a_bearer_grant(api: ApiClient, ctx: AppContext) -> None:
    email = new_email()
    user_id = (await register(api, email)).json()["user"]["id"]

    response = await login(api, email.upper())

    assert response.status == 200, response
    body = response.json()
    assert set(body) == {"access", "refresh", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    principal = ctx.tokens.verify_access(body["access"])
    assert (principal.user_id, principal.role) == (user_id, "customer")
    assert ctx.tokens.verify_refresh(body["refresh"]).user_id == user_id


async def test_login_gives_one_answer_for_unknown_email_and_wrong_password(api: ApiClient) -> None:
    email = new_email()
    await register(api, email)

    wrong_password = await login(api, email, "not the password at all")
    unknown_email = await login(api, new_email("nobody"), PASSWORD)

    for response in (wrong_password, unknown_email):
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong_password.json() == unknown_email.json()


async def test_login_takes_about_as_long_for_an_unknown_email(api: ApiClient) -> None:
    email = new_email()
    await register(api, email)

    async def timed(address: str) -> float:
        started = time.perf_counter()
        assert (await login(api, address, "wrong password here")).status == 401
        return time.perf_counter() - started

    wrong = [await timed(email) for _ in range(3)]
    unknown = [await timed(new_email("nobody")) for _ in range(3)]
    # Without the dummy hash an unknown e-mail answers ~50x faster than a hash verification.
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (wrong, unknown)


# ---- refresh rotation -----------------------------------------------------------------------


async def test_refresh_rotates_the_pair(api: ApiClient, ctx: AppContext) -> None:
    body = (await register(api)).json()

    response = await refresh(api, body["refresh"])

    assert response.status == 200, response
    rotated = response.json()
    assert set(rotated) == {"access", "refresh", "token_type", "expires_in"}
    assert rotated["refresh"] != body["refresh"] and rotated["access"] != body["access"]
    old = ctx.tokens.verify_refresh(body["refresh"])
    new = ctx.tokens.verify_refresh(rotated["refresh"])
    assert new.family_id == old.family_id and new.jti != old.jti
    assert (await api.get(f"{AUTH}/me", token=rotated["access"])).status == 200
    assert (await refresh(api, rotated["refresh"])).status == 200


async def test_reusing_a_used_refresh_token_revokes_the_whole_family(api: ApiClient) -> None:
    first = (await register(api)).json()["refresh"]
    second = (await refresh(api, first)).json()["refresh"]

    replay = await refresh(api, first)

    assert_problem(replay, 401)
    assert replay.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(await refresh(api, second), 401)  # the legitimate successor died with it


async def test_two_concurrent_refreshes_one_wins_and_the_family_dies(api: ApiClient) -> None:
    token = (await register(api)).json()["refresh"]

    results = await asyncio.gather(refresh(api, token), refresh(api, token))

    assert sorted(r.status for r in results) == [200, 401]
    winner = next(r for r in results if r.status == 200).json()
    assert_problem(await refresh(api, winner["refresh"]), 401)


async def test_a_reuse_seen_during_a_rotation_also_revokes_its_successor(
    api: ApiClient, ctx: AppContext
) -> None:
    body = (await register(api)).json()
    first = body["refresh"]
    second = (await refresh(api, first)).json()["refresh"]

    # A thief rotates the current token while the victim presents the used one.
    async with rotation_held(ctx.pool, body["user"]["id"]):
        thief = asyncio.ensure_future(refresh(api, second))
        await wait_for_lock_waiters(ctx.pool, 1)  # the thief's successor is not inserted yet
        victim = asyncio.ensure_future(refresh(api, first))
        await wait_for_lock_waiters(ctx.pool, 2)  # the reuse's revocation waits for the thief
    stolen, reuse = await thief, await victim

    assert stolen.status == 200, stolen
    assert_problem(reuse, 401)
    assert_problem(await refresh(api, stolen.json()["refresh"]), 401)


async def test_other_families_of_the_same_user_survive_a_reuse(api: ApiClient) -> None:
    email = new_email()
    stolen = (await register(api, email)).json()["refresh"]
    other_device = (await login(api, email)).json()["refresh"]
    await refresh(api, stolen)
    assert (await refresh(api, stolen)).status == 401

    assert (await refresh(api, other_device)).status == 200


async def test_refresh_takes_the_current_role(api: ApiClient, ctx: AppContext) -> None:
    body = (await register(api)).json()
    await ctx.pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", body["user"]["id"])

    rotated = (await refresh(api, body["refresh"])).json()

    assert ctx.tokens.verify_access(rotated["access"]).role == "admin"


@pytest.mark.parametrize("kind", ["access", "garbage", "empty"])
async def test_refresh_refuses_what_is_not_a_refresh_token(api: ApiClient, kind: str) -> None:
    body = (await register(api)).json()
    token = {"access": body["access"], "garbage": "x.y.z", "empty": ""}[kind]
    response = await refresh(api, token)
    assert response.status == (422 if kind == "empty" else 401), response


# ---- logout and me --------------------------------------------------------------------------


async def test_logout_revokes_the_family(api: ApiClient) -> None:
    body = (await register(api)).json()
    rotated = (await refresh(api, body["refresh"])).json()

    response = await api.post(
        f"{AUTH}/logout", json={"refresh": rotated["refresh"]}, token=rotated["access"]
    )

    assert response.status == 204 and response.body == b""
    assert_problem(await refresh(api, rotated["refresh"]), 401)
    # Access tokens are stateless: they live out their 60 minutes.
    assert (await api.get(f"{AUTH}/me", token=rotated["access"])).status == 200


async def test_logout_during_a_refresh_also_revokes_the_successor(
    api: ApiClient, ctx: AppContext
) -> None:
    body = (await register(api)).json()

    async with rotation_held(ctx.pool, body["user"]["id"]):
        rotating = asyncio.ensure_future(refresh(api, body["refresh"]))
        await wait_for_lock_waiters(ctx.pool, 1)  # the successor is not inserted yet
        logging_out = asyncio.ensure_future(
            api.post(f"{AUTH}/logout", json={"refresh": body["refresh"]}, token=body["access"])
        )
        await wait_for_lock_waiters(ctx.pool, 2)  # the logout waits for the rotation
    rotated, logout = await rotating, await logging_out

    assert rotated.status == 200 and logout.status == 204, (rotated, logout)
    # No Redis here: PostgreSQL alone must know that the successor died with the sign-in.
    assert_problem(await refresh(api, rotated.json()["refresh"]), 401)


async def test_logout_twice_is_fine(api: ApiClient) -> None:
    body = (await register(api)).json()
    for _ in range(2):
        response = await api.post(
            f"{AUTH}/logout", json={"refresh": body["refresh"]}, token=body["access"]
        )
        assert response.status == 204


async def test_logout_needs_an_access_token(api: ApiClient) -> None:
    body = (await register(api)).json()
    response = await api.post(f"{AUTH}/logout", json={"refresh": body["refresh"]})
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await refresh(api, body["refresh"])).status == 200


async def test_logout_cannot_end_someone_elses_sign_in(api: ApiClient) -> None:
    victim = (await register(api)).json()
    attacker = (await register(api)).json()

    response = await api.post(
        f"{AUTH}/logout", json={"refresh": victim["refresh"]}, token=attacker["access"]
    )

    assert_problem(response, 403)
    assert (await refresh(api, victim["refresh"])).status == 200


async def test_me_describes_the_caller(api: ApiClient, make_user: UserFactory) -> None:
    user, token = await make_user.create("admin")
    response = await api.get(f"{AUTH}/me", token=token)
    assert response.status == 200
    assert response.json() == {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": "admin",
        "created_at": response.json()["created_at"],
    }


async def test_me_needs_a_token(api: ApiClient) -> None:
    response = await api.get(f"{AUTH}/me")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_every_auth_route_accepts_a_trailing_slash(api: ApiClient) -> None:
    email = new_email()
    registered = await api.post(f"{AUTH}/register/", json={"email": email, "password": PASSWORD})
    assert registered.status == 201
    grant = (await api.post(f"{AUTH}/login/", json={"email": email, "password": PASSWORD})).json()
    rotated = await api.post(f"{AUTH}/refresh/", json={"refresh": grant["refresh"]})
    assert rotated.status == 200
    tokens = rotated.json()
    assert (await api.get(f"{AUTH}/me/", token=tokens["access"])).status == 200
    logout = await api.post(
        f"{AUTH}/logout/", json={"refresh": tokens["refresh"]}, token=tokens["access"]
    )
    assert logout.status == 204


# ---- malformed requests on these routes -----------------------------------------------------


async def test_malformed_json_is_400(api: ApiClient) -> None:
    response = await api.post(
        f"{AUTH}/login", body=b'{"email": "a@b.c", ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400)


async def test_a_body_that_is_not_json_is_415(api: ApiClient) -> None:
    response = await api.post(
        f"{AUTH}/login",
        body=b"email=a@b.c&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415)


async def test_a_body_over_the_limit_is_413_and_the_server_keeps_serving(
    api: ApiClient, ctx: AppContext
) -> None:
    limit = ctx.settings.max_body_size
    padding = b" " * (limit + 1 - len(b'{"email":"a@b.c","password":"x"}'))
    body = b'{"email":"a@b.c","password":"x"}' + padding
    assert len(body) == limit + 1

    response = await api.post(
        f"{AUTH}/login", body=body, headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 413)
    assert (await api.get("/healthz")).status == 200


async def test_a_body_at_the_limit_is_read(api: ApiClient, ctx: AppContext) -> None:
    head = b'{"email":"nobody@example.com","password":"x"}'
    body = head + b" " * (ctx.settings.max_body_size - len(head))
    response = await api.post(
        f"{AUTH}/login", body=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 401)


async def test_me_is_cached_and_a_promotion_retires_it(
    api: ApiClient, ctx: AppContext, make_user: UserFactory
) -> None:
    from server.services.accounts import accounts_changed

    user, token = await make_user.create()
    assert (await api.get("/api/v1/auth/me", token=token)).json()["role"] == "customer"
    await ctx.pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", user.id)
    # Served from the cache until the account change is announced ...
    assert (await api.get("/api/v1/auth/me", token=token)).json()["role"] == "customer"
    await accounts_changed(ctx)  # what `storefront createadmin` does after promoting
    # ... then read afresh.
    assert (await api.get("/api/v1/auth/me", token=token)).json()["role"] == "admin"
