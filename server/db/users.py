"""Users repository."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from server.domain.errors import AlreadyExists, NotFound


class UserRecord(msgspec.Struct, frozen=True):
    id: int
    email: str
    name: str
    role: str
    created_at: datetime
    password_hash: str = ""

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
        }


_COLUMNS = "id, email, name, role, created_at, password_hash"


def _record(row: asyncpg.Record) -> UserRecord:
    return UserRecord(**dict(row))


async def create_user(
    conn: asyncpg.Connection | asyncpg.Pool,
    email: str,
    name: str,
    password_hash: str,
    role: str = "customer",
) -> UserRecord:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO users (email, name, password_hash, role) VALUES ($1, $2, $3, $4) "
            f"RETURNING {_COLUMNS}",
            email.lower(),
            name,
            password_hash,
            role,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists("this e-mail is already registered") from None
    assert row is not None
    return _record(row)


async def get_by_email(conn: asyncpg.Connection | asyncpg.Pool, email: str) -> UserRecord | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE email = $1", email.lower())
    return _record(row) if row else None


async def get_by_id(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> UserRecord:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound("no such user")
    return _record(row)


async def set_password_hash(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, old_hash: str, new_hash: str
) -> bool:
    """Replace the hash only if it is still `old_hash` (a password change in between wins)."""
    status = await conn.execute(
        "UPDATE users SET password_hash = $3, updated_at = now()"
        " WHERE id = $1 AND password_hash = $2",
        user_id,
        old_hash,
        new_hash,
    )
    return status.endswith(" 1")


async def upsert_admin(
    conn: asyncpg.Connection | asyncpg.Pool, email: str, password_hash: str
) -> tuple[UserRecord, bool]:
    """Create an admin, or promote an existing user (resetting the password); True if created."""
    row = await conn.fetchrow(
        f"""INSERT INTO users (email, name, password_hash, role) VALUES ($1, '', $2, 'admin')
            ON CONFLICT (email) DO UPDATE
               SET role = 'admin', password_hash = EXCLUDED.password_hash, updated_at = now()
            RETURNING {_COLUMNS}, (xmax = 0) AS created""",
        email.lower(),
        password_hash,
    )
    assert row is not None
    values = dict(row)
    created = bool(values.pop("created"))
    return UserRecord(**values), created
