"""Maintenance SQL: the daily cleanup of rows that can no longer matter (workers/broker.py runs it).

- refresh tokens past their expiry (used, revoked or not: an expired token is refused anyway,
  and reuse detection only needs tokens that could still be presented);
- idempotency keys past their expiry (a replay after that is a new request);
- outbox rows sent more than `SENT_OUTBOX_RETENTION` ago (dead ones stay for inspection);
- domain events older than `EVENT_RETENTION_DAYS` whose webhook deliveries are all finished
  (succeeded, or dead: given up), with those deliveries. A pending delivery keeps its event,
  also when its subscription is disabled: re-enabling it sends what was pending then (events
  of the time it was disabled are not queued for it at all).

Deletes go in batches, each a short statement of its own, so the job never holds many locks;
`SKIP LOCKED` lets two runs at once share the work instead of waiting on each other.
"""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger(__name__)

BATCH = 5_000
SENT_OUTBOX_RETENTION_DAYS = 30
EVENT_RETENTION_DAYS = 30
FINISHED_DELIVERIES = ("succeeded", "dead")
_FINISHED = ", ".join(f"'{status}'" for status in FINISHED_DELIVERIES)

PURGES: dict[str, str] = {
    "refresh_tokens": """
        DELETE FROM refresh_tokens WHERE jti IN (
            SELECT jti FROM refresh_tokens WHERE expires_at < now()
             LIMIT $1 FOR UPDATE SKIP LOCKED)""",
    "idempotency_keys": """
        DELETE FROM idempotency_keys WHERE (user_id, key) IN (
            SELECT user_id, key FROM idempotency_keys WHERE expires_at < now()
             LIMIT $1 FOR UPDATE SKIP LOCKED)""",
    "outbox": f"""
        DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox
             WHERE status = 'sent'
               AND sent_at < now() - interval '{SENT_OUTBOX_RETENTION_DAYS} days'
             LIMIT $1 FOR UPDATE SKIP LOCKED)""",
    # The deliveries go first, each re-checked under its row lock, and an event only once none
    # is left: a redelivery committed meanwhile keeps its delivery and event.
    "events": f"""
        WITH doomed AS (
            SELECT e.id FROM events e
             WHERE e.created_at < now() - interval '{EVENT_RETENTION_DAYS} days'
               AND NOT EXISTS (
                   SELECT 1 FROM webhook_deliveries d
                    WHERE d.event_id = e.id AND d.status NOT IN ({_FINISHED}))
             LIMIT $1 FOR UPDATE OF e SKIP LOCKED),
        finished AS (
            DELETE FROM webhook_deliveries d USING doomed
             WHERE d.event_id = doomed.id AND d.status IN ({_FINISHED})
            RETURNING d.id)
        DELETE FROM events e USING doomed
         WHERE e.id = doomed.id
           AND NOT EXISTS (
               SELECT 1 FROM webhook_deliveries d
                WHERE d.event_id = e.id AND d.id NOT IN (SELECT id FROM finished))""",
}


async def purge_expired(pool: asyncpg.Pool, *, batch: int = BATCH) -> dict[str, int]:
    """Delete what expired; returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, sql in PURGES.items():
        total = 0
        while True:
            status = await pool.execute(sql, batch)
            count = int(status.rsplit(" ", 1)[-1])
            total += count
            if count < batch:
                break
        deleted[table] = total
    log.info("cleanup: deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items()))
    return deleted
