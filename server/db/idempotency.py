"""Idempotency keys repository: claims, stored responses, releases.

A claim is one row per (user, key). It is taken with a single INSERT in its own short
transaction so that concurrent requests carrying the same key race on the primary key, not on
application code: exactly one of them inserts, the others read the winner's row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key someone already claimed: its request fingerprint and, once done, the response."""

    request_hash: str
    state: str  # 'in_flight' | 'done'
    response_status: int | None
    response_body: bytes | None


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key. `claimed_at` tells this claim from a later takeover: only the
    holder may complete or release it."""

    claimed_at: datetime


async def claim(
    conn: Executor,
    user_id: int,
    key: str,
    request_hash: str,
    *,
    ttl_seconds: int,
    lease_seconds: int,
) -> Claim | StoredKey:
    """Claim `key` for this request (a Claim), or the row that holds it.

    A row past its expiry, or an in-flight claim older than `lease_seconds` (its request died
    without releasing it), is taken over instead of blocking the key forever.
    """
    row = await conn.fetchrow(
        """INSERT INTO idempotency_keys (user_id, key, request_hash, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))
           ON CONFLICT (user_id, key) DO UPDATE
              SET request_hash = EXCLUDED.request_hash, state = 'in_flight',
                  response_status = NULL, response_body = NULL,
                  created_at = now(), expires_at = EXCLUDED.expires_at
            WHERE idempotency_keys.expires_at <= now()
               OR (idempotency_keys.state = 'in_flight'
                   AND idempotency_keys.created_at < now() - make_interval(secs => $5))
           RETURNING created_at""",
        user_id,
        key,
        request_hash,
        float(ttl_seconds),
        float(lease_seconds),
    )
    if row is not None:
        return Claim(row["created_at"])
    held = await conn.fetchrow(
        """SELECT request_hash, state, response_status, response_body
             FROM idempotency_keys WHERE user_id = $1 AND key = $2""",
        user_id,
        key,
    )
    if held is None:
        # Released between our INSERT and SELECT: the key is free again.
        return await claim(
            conn, user_id, key, request_hash, ttl_seconds=ttl_seconds, lease_seconds=lease_seconds
        )
    return StoredKey(
        held["request_hash"],
        held["state"],
        held["response_status"],
        bytes(held["response_body"]) if held["response_body"] is not None else None,
    )


async def complete(
    conn: Executor, user_id: int, key: str, claim: Claim, status: int, body: bytes
) -> bool:
    """Store the response; call it in the transaction that produced it. False when the claim
    is no longer this request's (its lease ran out and another request took the key over):
    the caller must then roll its work back, or two requests would both have acted."""
    result = await conn.execute(
        """UPDATE idempotency_keys
              SET state = 'done', response_status = $4, response_body = $5
            WHERE user_id = $1 AND key = $2 AND created_at = $3 AND state = 'in_flight'""",
        user_id,
        key,
        claim.claimed_at,
        status,
        body,
    )
    return bool(result == "UPDATE 1")


async def release(conn: Executor, user_id: int, key: str, claim: Claim) -> None:
    """Drop this request's in-flight claim: it failed without an answer worth replaying."""
    await conn.execute(
        """DELETE FROM idempotency_keys
            WHERE user_id = $1 AND key = $2 AND created_at = $3 AND state = 'in_flight'""",
        user_id,
        key,
        claim.claimed_at,
    )
