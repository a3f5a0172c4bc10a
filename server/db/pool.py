"""The asyncpg pool: one per process, with JSON codecs and query-latency metrics."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from server import metrics


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Statement latency for /metrics; costs about a microsecond per statement (see metrics.py).
    conn.add_query_logger(metrics.observe_query)
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset-on-release, which costs a round trip per release (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL). Nothing here leaves session state behind: no LISTEN, no
    cursors or SET outside a transaction, and the migration lock is released explicitly.
    asyncpg still rolls back a transaction left open before calling this."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        # Statement cache stays on: the gateway runs a small fixed set of queries.
        server_settings={"application_name": "storefront", "timezone": "UTC"},
    )
    return pool


# The server is gone, restarting or refusing connections: the request may succeed if retried in
# a moment (503 + Retry-After), unlike a bad query (a bug: 500). SQLSTATE class 08 (connection
# exception), 57P01-57P03 (admin/crash shutdown, cannot connect now), a dropped connection.
_UNAVAILABLE = (
    ConnectionError,  # refused, reset (TCP)
    FileNotFoundError,  # no socket file (a Unix-socket server that is down)
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,  # "connection is closed" and the like
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL cannot be reached right now."""
    return isinstance(exc, _UNAVAILABLE)


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    await _init_connection(conn)
    return conn
