"""Accounts over REST: register, login, refresh, logout, me (API.md §3 Auth)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from server.db.users import UserRecord
from server.http.base import ApiHandler
from server.http.edge import charge_login
from server.openapi import Operation
from server.services import accounts
from server.services.accounts import TokenPair

Email = Annotated[
    str,
    msgspec.Meta(
        max_length=accounts.MAX_EMAIL_LENGTH,
        pattern=accounts.EMAIL_PATTERN,
        description="lowercased before it is stored or compared",
    ),
]
NewPassword = Annotated[
    str,
    msgspec.Meta(min_length=accounts.MIN_PASSWORD_LENGTH, max_length=accounts.MAX_PASSWORD_LENGTH),
]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=accounts.MAX_PASSWORD_LENGTH)]
RefreshToken = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: NewPassword
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=accounts.MAX_EMAIL_LENGTH)]
    password: Password


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh: RefreshToken


class User(msgspec.Struct, frozen=True):
    id: int
    email: str
    name: str
    role: Literal["customer", "admin", "service"]
    created_at: datetime

    @classmethod
    def of(cls, record: UserRecord) -> User:
        return cls(
            record.id,
            record.email,
            record.name,
            record.role,  # type: ignore[arg-type]
            record.created_at,
        )


class Registered(msgspec.Struct, frozen=True):
    user: User
    access: str
    refresh: str


class Grant(msgspec.Struct, frozen=True):
    access: str
    refresh: str
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, msgspec.Meta(description="seconds the access token lives")]

    @classmethod
    def of(cls, tokens: TokenPair) -> Grant:
        return cls(tokens.access, tokens.refresh, "Bearer", tokens.expires_in)


class RegisterHandler(ApiHandler):
    budget_by_ip: ClassVar[bool] = True
    access: ClassVar[dict[str, str]] = {"POST": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Create a customer account and sign in",
            request=RegisterBody,
            response=Registered,
            status=201,
            errors=(409,),
            description="The e-mail is trimmed and lowercased; 409 when it is taken. Passwords "
            "have at least 10 characters and are stored as Argon2id hashes. `role`, "
            "`id` and other read-only fields are refused with 422.",
        ),
    }

    async def post(self) -> None:
        body = self.parse_body(RegisterBody)
        user, tokens = await accounts.register(self.ctx, body.email, body.password, body.name)
        _no_store(self)
        self.send_json(Registered(User.of(user), tokens.access, tokens.refresh), 201)


class LoginHandler(ApiHandler):
    budget_by_ip: ClassVar[bool] = True
    access: ClassVar[dict[str, str]] = {"POST": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Sign in",
            request=LoginBody,
            response=Grant,
            errors=(401,),
            description="401 alike for an unknown e-mail and a wrong password. Attempts are "
            "limited per client IP and e-mail (`RATE_LIMIT_LOGIN`); when the shared "
            "limiter (Redis) is down, sign-in answers 503 rather than go unlimited.",
        ),
    }

    async def post(self) -> None:
        body = self.parse_body(LoginBody)
        await charge_login(self, body.email)
        tokens = await accounts.login(self.ctx, body.email, body.password)
        _no_store(self)
        self.send_json(Grant.of(tokens))


class RefreshHandler(ApiHandler):
    budget_by_ip: ClassVar[bool] = True
    access: ClassVar[dict[str, str]] = {"POST": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Rotate a refresh token",
            request=RefreshBody,
            response=Grant,
            errors=(401,),
            description="Answers a new access and refresh token; the presented refresh token is "
            "dead from then on. Presenting a used (or revoked) refresh token again "
            "revokes every token of its sign-in (401): whoever holds them must sign "
            "in again. Of two concurrent refreshes of one token, one wins and the "
            "sign-in is revoked.",
        ),
    }

    async def post(self) -> None:
        body = self.parse_body(RefreshBody)
        tokens = await accounts.refresh(self.ctx, body.refresh)
        _no_store(self)
        self.send_json(Grant.of(tokens))


class LogoutHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"POST": "user"}
    api: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Sign out",
            request=RefreshBody,
            status=204,
            errors=(403,),
            description="Revokes the sign-in (token family) of the refresh token; idempotent. "
            "403 when the refresh token belongs to another account. Access tokens "
            "are stateless and stay valid until they expire (60 minutes).",
        ),
    }

    async def post(self) -> None:
        principal = self.caller
        body = self.parse_body(RefreshBody)
        await accounts.logout(self.ctx, principal, body.refresh)
        self.send_empty(204)


class MeHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "user"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation("The caller's account", response=User),
    }

    async def get(self) -> None:
        principal = self.caller
        # Taken before the read: an account change during it must retire what is read.
        self.offer_replay(accounts.current_user_freshness(self.ctx))
        body = await accounts.current_user_json(self.ctx, principal, _encode_user)
        self.set_header("Cache-Control", "private, no-store")
        self.send_json(body)


def _no_store(handler: ApiHandler) -> None:
    """Answers carrying tokens are never stored by any cache (RFC 6749, section 5.1)."""
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Pragma", "no-cache")


def _encode_user(record: UserRecord) -> bytes:
    return msgspec.json.encode(User.of(record))


routes = [
    (r"/api/v1/auth/register/?", RegisterHandler),
    (r"/api/v1/auth/login/?", LoginHandler),
    (r"/api/v1/auth/refresh/?", RefreshHandler),
    (r"/api/v1/auth/logout/?", LogoutHandler),
    (r"/api/v1/auth/me/?", MeHandler),
]
