"""Knowing that a racer is in place: it waits on a lock (a row, a transaction, an advisory
lock) that the test holds."""

from __future__ import annotations

import asyncio

import asyncpg


async def wait_for_lock_waiters(pool: asyncpg.Pool, count: int, timeout: float = 5.0) -> None:
    """Return once `count` statements of this database wait on a lock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} statements waiting on a lock after {timeout} s")
