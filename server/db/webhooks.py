"""Webhooks repository: subscriptions, domain events and their deliveries.

`emit` writes the event and one pending delivery per matching active subscription in ONE
statement, inside the caller's transaction: the event exists exactly when the change does.
Claiming due deliveries is one statement with `FOR UPDATE SKIP LOCKED` and a lease, so several
workers share them and a crashed worker's deliveries come back when the lease runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from server.db import sql

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class Subscription(msgspec.Struct, frozen=True):
    id: int
    url: str
    event_types: list[str]
    secret: str
    is_active: bool
    consecutive_failures: int
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Delivery(msgspec.Struct, frozen=True):
    id: int
    subscription_id: int
    event_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DueDelivery(msgspec.Struct, frozen=True):
    id: int
    subscription_id: int
    url: str
    secret: str
    event_id: int
    event_type: str
    payload: dict[str, Any]
    attempts: int  # including the one being made


_SUBSCRIPTION_COLUMNS = (
    "id, url, event_types, secret, is_active, consecutive_failures, disabled_at, created_at, "
    "updated_at"
)
_DELIVERY_COLUMNS = (
    "d.id, d.subscription_id, d.event_id, e.type AS event_type, d.status, d.attempts, "
    "d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.delivered_at"
)


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(**dict(row))


# ---- subscriptions --------------------------------------------------------------------------


async def insert_subscription(
    conn: Executor, url: str, event_types: Sequence[str], secret: str
) -> Subscription:
    row = await conn.fetchrow(
        f"""INSERT INTO webhook_subscriptions (url, event_types, secret) VALUES ($1, $2, $3)
            RETURNING {_SUBSCRIPTION_COLUMNS}""",
        url,
        list(event_types),
        secret,
    )
    assert row is not None
    return _subscription(row)


async def list_subscriptions(conn: Executor) -> list[Subscription]:
    rows = await conn.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions ORDER BY id"
    )
    return [_subscription(r) for r in rows]


async def get_subscription(conn: Executor, subscription_id: int) -> Subscription | None:
    row = await conn.fetchrow(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1",
        subscription_id,
    )
    return _subscription(row) if row else None


async def update_subscription(
    conn: Executor, subscription_id: int, changes: dict[str, Any]
) -> Subscription | None:
    assignments = sql.assignments(list(changes), extra=["updated_at = now()"])
    row = await conn.fetchrow(
        f"""UPDATE webhook_subscriptions SET {assignments} WHERE id = $1
            RETURNING {_SUBSCRIPTION_COLUMNS}""",
        subscription_id,
        *changes.values(),
    )
    return _subscription(row) if row else None


async def delete_subscription(conn: Executor, subscription_id: int) -> bool:
    status = await conn.execute("DELETE FROM webhook_subscriptions WHERE id = $1", subscription_id)
    return not status.endswith(" 0")


# ---- events ---------------------------------------------------------------------------------


async def emit(conn: asyncpg.Connection, event_type: str, payload: dict[str, Any]) -> int:
    """Write the event and a pending delivery for each active subscription to its type (in the
    caller's transaction); returns how many deliveries were queued."""
    queued: int = await conn.fetchval(
        """WITH event AS (
               INSERT INTO events (type, payload) VALUES ($1, $2) RETURNING id),
           queued AS (
               INSERT INTO webhook_deliveries (subscription_id, event_id)
               SELECT s.id, event.id FROM event, webhook_subscriptions s
                WHERE s.is_active AND $1 = ANY(s.event_types)
               RETURNING 1)
           SELECT count(*) FROM queued""",
        event_type,
        payload,
    )
    return queued


# ---- deliveries -----------------------------------------------------------------------------


_CLAIM_SQL = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
      JOIN webhook_subscriptions s ON s.id = d.subscription_id
     WHERE d.status IN ('pending', 'sending') AND d.next_attempt_at <= now() AND s.is_active
     ORDER BY d.next_attempt_at, d.id
     LIMIT $1
     FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
   SET status = 'sending', attempts = d.attempts + 1,
       next_attempt_at = now() + make_interval(secs => $2)
  FROM due, webhook_subscriptions s, events e
 WHERE d.id = due.id AND s.id = d.subscription_id AND e.id = d.event_id
RETURNING d.id, d.subscription_id, s.url, s.secret, d.event_id, e.type AS event_type,
          e.payload, d.attempts
"""


async def claim_due(pool: asyncpg.Pool, limit: int, lease: float) -> list[DueDelivery]:
    rows = await pool.fetch(_CLAIM_SQL, limit, float(lease))
    return [DueDelivery(**dict(r)) for r in sorted(rows, key=lambda r: r["id"])]


async def record_success(conn: Executor, delivery_id: int, status_code: int) -> None:
    await conn.execute(
        """WITH done AS (
               UPDATE webhook_deliveries
                  SET status = 'succeeded', delivered_at = now(), last_status_code = $2,
                      last_error = NULL
                WHERE id = $1 AND status = 'sending'
            RETURNING subscription_id)
           UPDATE webhook_subscriptions s SET consecutive_failures = 0
             FROM done WHERE s.id = done.subscription_id""",
        delivery_id,
        status_code,
    )


async def record_failure(
    conn: Executor,
    delivery_id: int,
    *,
    status_code: int | None,
    error: str,
    retry_in: float | None,
    disable_after: int,
) -> bool:
    """A failed attempt: retried after `retry_in` seconds, or dead (None). The subscription's
    failure count grows; at `disable_after` it is disabled. True when this disabled it."""
    disabled: bool | None = await conn.fetchval(
        """WITH failed AS (
               UPDATE webhook_deliveries
                  SET status = CASE WHEN $4::float8 IS NULL THEN 'dead' ELSE 'pending' END,
                      next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at
                                             ELSE now() + make_interval(secs => $4) END,
                      last_status_code = $2, last_error = $3
                WHERE id = $1 AND status = 'sending'
            RETURNING subscription_id)
           UPDATE webhook_subscriptions s
              SET consecutive_failures = s.consecutive_failures + 1,
                  is_active = s.is_active AND s.consecutive_failures + 1 < $5,
                  disabled_at = CASE WHEN s.is_active AND s.consecutive_failures + 1 >= $5
                                     THEN now() ELSE s.disabled_at END,
                  updated_at = now()
             FROM failed WHERE s.id = failed.subscription_id
         RETURNING s.consecutive_failures = $5""",
        delivery_id,
        status_code,
        error[:1000],
        retry_in,
        disable_after,
    )
    return bool(disabled)


async def deliveries_of(
    conn: Executor, subscription_id: int, *, before_id: int | None, limit: int
) -> list[Delivery]:
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.subscription_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
             ORDER BY d.id DESC LIMIT $3""",
        subscription_id,
        before_id,
        limit,
    )
    return [Delivery(**dict(r)) for r in rows]


async def redeliver(conn: Executor, subscription_id: int, delivery_id: int) -> Delivery | None:
    """Queue a delivery again now (whatever its outcome), with a fresh attempt budget; None
    when it is not this subscription's or is being sent right now."""
    # One statement: the answer is the row as this update left it, even when a delivery job
    # claims it a moment later (a separate read could see it `sending` already).
    row = await conn.fetchrow(
        f"""WITH d AS (
                UPDATE webhook_deliveries
                   SET status = 'pending', attempts = 0, next_attempt_at = now()
                 WHERE id = $2 AND subscription_id = $1 AND status <> 'sending'
             RETURNING *)
            SELECT {_DELIVERY_COLUMNS} FROM d JOIN events e ON e.id = d.event_id""",
        subscription_id,
        delivery_id,
    )
    return Delivery(**dict(row)) if row else None
