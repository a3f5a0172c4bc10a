"""Stopping a refresh-token rotation half-way, so that a revocation can be made to race it.

A rotation consumes the presented token, then inserts its successor. The INSERT's foreign-key
check takes FOR KEY SHARE on the user's row, so while `rotation_held` keeps that row FOR UPDATE
the rotation stops between the two. A racer started meanwhile is known to be in place once
`wait_for_lock_waiters` counts it waiting too (on a row, a transaction or an advisory lock).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from tests.lock_support import wait_for_lock_waiters

__all__ = ["rotation_held", "wait_for_lock_waiters"]


@asynccontextmanager
async def rotation_held(pool: asyncpg.Pool, user_id: int) -> AsyncIterator[None]:
    """Rotations of the user's tokens stop before inserting their successor until the exit."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
            yield
        finally:
            await tx.rollback()
