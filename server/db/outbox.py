"""The e-mail outbox: rows written in the transaction of what they announce (server/db/orders.py),
claimed and settled by the delivery job (workers/tasks/outbox.py).

Claiming is one statement with `FOR UPDATE SKIP LOCKED` and a lease, so several workers share
the due rows and a crashed worker's rows come back once their lease runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class OutboxMail:
    id: int
    kind: str
    recipient: str
    subject: str
    body: str
    attempts: int  # including the one being made


_CLAIM_SQL = """
WITH due AS (
    SELECT id FROM outbox
     WHERE status IN ('pending', 'sending') AND next_attempt_at <= now()
     ORDER BY next_attempt_at, id
     LIMIT $1
     FOR UPDATE SKIP LOCKED
)
UPDATE outbox o
   SET status = 'sending', attempts = o.attempts + 1,
       next_attempt_at = now() + make_interval(secs => $2)
  FROM due
 WHERE o.id = due.id
RETURNING o.id, o.kind, o.recipient, o.subject, o.body, o.attempts
"""

_SETTLE_SQL = """
UPDATE outbox o
   SET status = t.status,
       sent_at = CASE WHEN t.status = 'sent' THEN now() ELSE o.sent_at END,
       next_attempt_at = CASE WHEN t.status = 'pending'
                              THEN now() + make_interval(secs => t.delay)
                              ELSE o.next_attempt_at END,
       last_error = t.error
  FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[]) AS t(id, status, delay, error)
 WHERE o.id = t.id AND o.status = 'sending'
"""


async def claim_due(pool: asyncpg.Pool, limit: int, lease: float) -> list[OutboxMail]:
    """Take up to `limit` due rows (pending, or sending with an expired lease) for sending."""
    rows = await pool.fetch(_CLAIM_SQL, limit, float(lease))
    return [
        OutboxMail(r["id"], r["kind"], r["recipient"], r["subject"], r["body"], r["attempts"])
        for r in sorted(rows, key=lambda r: r["id"])
    ]


async def settle(
    pool: asyncpg.Pool,
    ids: Sequence[int],
    statuses: Sequence[str],
    delays: Sequence[float],
    errors: Sequence[str | None],
) -> None:
    """Record each claimed row's outcome: sent, pending again after its delay, or dead."""
    await pool.execute(_SETTLE_SQL, list(ids), list(statuses), list(delays), list(errors))
