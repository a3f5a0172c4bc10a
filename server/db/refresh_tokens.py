"""Refresh-tokens repository: one row per issued token, grouped into families (one per login).

Rotation is a single conditional UPDATE: of any number of concurrent attempts to use one token,
exactly one sees `used_at IS NULL` and wins; the others find no row and the service treats them
as reuse.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypeAlias

import asyncpg
import msgspec

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class ConsumedToken(msgspec.Struct, frozen=True):
    family_id: uuid.UUID
    user_id: int


async def record(
    conn: Executor, jti: uuid.UUID, family_id: uuid.UUID, user_id: int, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4)",
        jti,
        family_id,
        user_id,
        expires_at,
    )


async def consume(conn: Executor, jti: uuid.UUID) -> ConsumedToken | None:
    """Mark a live token used; None when it is unknown, used, revoked or expired."""
    row = await conn.fetchrow(
        """UPDATE refresh_tokens SET used_at = now()
            WHERE jti = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
        RETURNING family_id, user_id""",
        jti,
    )
    return ConsumedToken(row["family_id"], row["user_id"]) if row else None


async def revoke_family(conn: Executor, family_id: uuid.UUID) -> int:
    """Revoke every token of the family; returns how many were still unrevoked."""
    status = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
    )
    return int(status.rsplit(" ", 1)[1])
