"""Refresh-tokens repository: one row per issued token, grouped into families (one per login).

Rotation is a single conditional UPDATE: of any number of concurrent attempts to use one token,
exactly one sees `used_at IS NULL` and wins; the others find no row and the service treats them
as reuse.

Rotation and revocation of one family serialise on a transaction-scoped advisory lock keyed by
the family (`lock_family`). Without it a revocation that waits on the row a rotation consumed
would, under READ COMMITTED, re-check only that row once the rotation commits and miss the
successor the rotation inserted. With it, a revocation's UPDATE starts (and takes its snapshot)
only after any rotation in flight has committed, so it sees every token of the family; a rotation
that starts after a revocation finds its token revoked.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypeAlias

import asyncpg
import msgspec

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool

# The two-key advisory lock space does not overlap the one-key space (migrations use that); the
# first key says "refresh-token family", the second is a hash of the family id. A hash collision
# only makes two families wait for each other briefly.
_FAMILY_LOCK_CLASS = 0x52544B46  # "RTKF"


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


async def lock_family(conn: asyncpg.Connection, family_id: uuid.UUID) -> None:
    """Hold the family's lock until the caller's transaction ends (take it before reading)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2::uuid::text))", _FAMILY_LOCK_CLASS, family_id
    )


async def revoke_family(conn: asyncpg.Connection, family_id: uuid.UUID) -> int:
    """Revoke every token of the family; returns how many were still unrevoked."""
    # The lock is its own statement: an UPDATE that took it would already hold an older snapshot.
    async with conn.transaction():
        await lock_family(conn, family_id)
        status = await conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now()"
            " WHERE family_id = $1 AND revoked_at IS NULL",
            family_id,
        )
    return int(status.rsplit(" ", 1)[1])


async def revoke_user(conn: asyncpg.Connection, user_id: int) -> list[uuid.UUID]:
    """Revoke every live token of the user; returns the families that had one."""
    async with conn.transaction():
        # Every live family's lock first (in one order, so two such calls cannot deadlock), then
        # the UPDATE, whose snapshot then includes the successors of rotations that were in flight.
        await conn.execute(
            """SELECT pg_advisory_xact_lock($2, hashtext(family_id::text))
                 FROM (SELECT DISTINCT family_id FROM refresh_tokens
                        WHERE user_id = $1 AND revoked_at IS NULL) AS live
                ORDER BY family_id""",
            user_id,
            _FAMILY_LOCK_CLASS,
        )
        rows = await conn.fetch(
            """UPDATE refresh_tokens SET revoked_at = now()
                WHERE user_id = $1 AND revoked_at IS NULL
            RETURNING family_id""",
            user_id,
        )
    return sorted({row["family_id"] for row in rows})
