"""Accounts: registration, sign-in, refresh-token rotation with reuse detection, sign-out.

A login starts a token *family*. Each refresh consumes the presented refresh token (one atomic
UPDATE, so of two concurrent refreshes exactly one wins) and issues the next one in the same
family. A refresh token presented again after it was used - a replay, or the loser of a race -
means it may have been stolen, so the whole family is revoked and everyone holding it must sign
in again. Revocations are mirrored into Redis (when configured) so that every gateway process
refuses the family at once; PostgreSQL stays the source of truth. Rotation and revocation of one
family take the family's lock first (see server/db/refresh_tokens.py), so a revocation racing a
rotation also revokes the successor that rotation issues.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from server.db import refresh_tokens, users
from server.db.users import UserRecord
from server.domain.errors import (
    FieldError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    ValidationFailed,
)
from server.domain.principal import Principal
from server.services import revocations
from server.services.passwords import hash_password, needs_rehash, verify_password

if TYPE_CHECKING:
    from server.cache import Freshness
    from server.context import AppContext

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
MAX_EMAIL_LENGTH = 254
# Deliberately loose: one @, no spaces, a dot in the domain. Deliverability is the mailer's job.
# Spaces and controls are spelled out rather than `\s`, which differs between Python's re (it
# checks bodies) and the ECMAScript regexes of JSON Schema tools (\x1c-\x1f, \x85, \ufeff).
_NOT_IN_ADDRESS = r"@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_ADDRESS = rf"[^{_NOT_IN_ADDRESS}]+@[^{_NOT_IN_ADDRESS}]+\.[^{_NOT_IN_ADDRESS}.]+"
_EMAIL_RE = re.compile(rf"^{_ADDRESS}$")
# The same on the wire, where surrounding spaces, tabs and line breaks are tolerated (stripped).
EMAIL_PATTERN = rf"^[ \t\r\n]*{_ADDRESS}[ \t\r\n]*$"

BAD_CREDENTIALS = "the e-mail or password is incorrect"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access: str
    refresh: str
    expires_in: int  # seconds the access token lives


def normalise_email(email: str) -> str:
    normalised = email.strip().lower()
    if len(normalised) > MAX_EMAIL_LENGTH or not _EMAIL_RE.match(normalised):
        raise ValidationFailed(
            "the request body is invalid",
            errors=[FieldError("email", "not a valid e-mail address")],
        )
    return normalised


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        message = f"must be between {MIN_PASSWORD_LENGTH} and {MAX_PASSWORD_LENGTH} characters"
        raise ValidationFailed(
            "the request body is invalid", errors=[FieldError("password", message)]
        )


async def register(
    ctx: AppContext, email: str, password: str, name: str = ""
) -> tuple[UserRecord, TokenPair]:
    """Create a customer account and sign it in; `AlreadyExists` when the e-mail is taken."""
    email = normalise_email(email)
    check_password_rules(password)
    password_hash = await hash_password(password)
    async with ctx.pool.acquire() as conn, conn.transaction():
        user = await users.create_user(conn, email, name.strip(), password_hash, "customer")
        tokens = await _start_family(ctx, conn, user)
    return user, tokens


async def login(ctx: AppContext, email: str, password: str) -> TokenPair:
    """Sign in; one answer, in about the same time, for an unknown e-mail and a wrong password."""
    user = await users.get_by_email(ctx.pool, email.strip().lower())
    matches = await verify_password(user.password_hash if user else None, password)
    if user is None or not matches:
        raise Unauthenticated(BAD_CREDENTIALS)
    if needs_rehash(user.password_hash):  # an account from before today's Argon2 parameters
        await users.set_password_hash(
            ctx.pool, user.id, user.password_hash, await hash_password(password)
        )
    async with ctx.pool.acquire() as conn:
        return await _start_family(ctx, conn, user)


async def refresh(ctx: AppContext, refresh_token: str) -> TokenPair:
    """Rotate a refresh token; a used or revoked one revokes its whole family (401)."""
    claims = ctx.tokens.verify_refresh(refresh_token)
    if await revocations.is_known_revoked(ctx.redis, claims.family_id):
        raise Unauthenticated("this sign-in has been revoked; sign in again")
    rotated = await _rotate(ctx, claims.jti, claims.family_id, claims.user_id)
    if rotated is None:
        await revoke_family(ctx, claims.family_id)
        raise Unauthenticated("this refresh token was already used or revoked; sign in again")
    return rotated


async def logout(ctx: AppContext, principal: Principal, refresh_token: str) -> None:
    """End the sign-in the refresh token belongs to (idempotent)."""
    claims = ctx.tokens.verify_refresh(refresh_token)
    if claims.user_id != principal.user_id:
        raise PermissionDenied("this refresh token belongs to another account")
    await revoke_family(ctx, claims.family_id)


async def create_or_promote_admin(
    ctx: AppContext, email: str, password: str
) -> tuple[UserRecord, bool]:
    """Create an admin, or promote an existing account and reset its password; True if created.

    Promoting ends every sign-in of the account: a session from before the reset (perhaps the
    reason for it) must not go on refreshing, now with admin tokens.
    """
    password_hash = await hash_password(password)
    async with ctx.pool.acquire() as conn, conn.transaction():
        user, created = await users.upsert_admin(conn, email, password_hash)
        families = await refresh_tokens.revoke_user(conn, user.id)
    await _mirror_revocations(ctx, families)
    await accounts_changed(ctx)  # a promoted user's cached /auth/me retires
    return user, created


# GET /auth/me is read on every page of a storefront; the account is served from ctx.cache.
# Accounts change only through `storefront createadmin`, which bumps USERS: with Redis every
# gateway sees it within the cache's version bound (1 s); without Redis (one process) within
# USER_CACHE_TTL. The token's own role is already as old as the token (up to 60 min).
USERS = "users"
USER_CACHE_TTL = 60.0


async def current_user_json(
    ctx: AppContext, principal: Principal, encode: Callable[[UserRecord], bytes]
) -> bytes:
    """The caller's account, serialised by `encode`, from the cache."""

    async def load() -> bytes:
        return encode(await current_user(ctx, principal))

    return await ctx.cache.get_or_compute(USERS, f"id:{principal.user_id}", USER_CACHE_TTL, load)


def current_user_freshness(ctx: AppContext) -> Freshness:
    """How long what `current_user_json` reads next stays current (take it before the read)."""
    return ctx.cache.freshness(USERS)


async def accounts_changed(ctx: AppContext) -> None:
    await ctx.cache.bump(USERS)


async def current_user(ctx: AppContext, principal: Principal) -> UserRecord:
    try:
        return await users.get_by_id(ctx.pool, principal.user_id)
    except NotFound:
        raise Unauthenticated("this account no longer exists") from None


async def revoke_family(ctx: AppContext, family_id: uuid.UUID) -> None:
    async with ctx.pool.acquire() as conn:
        await refresh_tokens.revoke_family(conn, family_id)
    await _mirror_revocations(ctx, [family_id])


async def _mirror_revocations(ctx: AppContext, families: Iterable[uuid.UUID]) -> None:
    for family_id in families:
        await revocations.mirror_revocation(ctx.redis, family_id, ctx.settings.refresh_token_ttl)


async def _rotate(
    ctx: AppContext, jti: uuid.UUID, family_id: uuid.UUID, user_id: int
) -> TokenPair | None:
    # One transaction under the family's lock: a concurrent refresh or revocation of the family
    # waits until this commits, and by then the successor it would revoke is committed too.
    async with ctx.pool.acquire() as conn, conn.transaction():
        await refresh_tokens.lock_family(conn, family_id)
        consumed = await refresh_tokens.consume(conn, jti)
        if consumed is None or consumed.family_id != family_id or consumed.user_id != user_id:
            return None
        try:
            user = await users.get_by_id(conn, user_id)  # the role may have changed since
        except NotFound:
            return None
        return await _issue(ctx, conn, user, family_id)


async def _start_family(ctx: AppContext, conn: asyncpg.Connection, user: UserRecord) -> TokenPair:
    return await _issue(ctx, conn, user, uuid.uuid4())


async def _issue(
    ctx: AppContext, conn: asyncpg.Connection, user: UserRecord, family_id: uuid.UUID
) -> TokenPair:
    jti = uuid.uuid4()
    refresh_token, expires = ctx.tokens.issue_refresh(user.id, family_id, jti)
    await refresh_tokens.record(conn, jti, family_id, user.id, datetime.fromtimestamp(expires, UTC))
    access = ctx.tokens.issue_access(user.id, user.role)
    return TokenPair(access, refresh_token, ctx.settings.access_token_ttl)
