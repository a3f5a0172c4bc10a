"""Revoked refresh-token families mirrored into Redis, so every gateway process sees them at once.

PostgreSQL stays the source of truth; Redis is a fast "known dead" answer checked before it.
Every Redis failure is swallowed (with a warning): a missing mirror entry only means the
PostgreSQL check does the refusing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "sf:revoked-family:"
_TIMEOUT = 0.5


def family_key(family_id: uuid.UUID) -> str:
    return f"{KEY_PREFIX}{family_id}"


async def mirror_revocation(redis: Any | None, family_id: uuid.UUID, ttl_seconds: int) -> None:
    """Record the family as revoked for as long as any of its tokens could still verify."""
    if redis is None:
        return
    try:
        async with asyncio.timeout(_TIMEOUT):
            await redis.set(family_key(family_id), b"1", ex=max(1, ttl_seconds))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not mirror the revocation of family %s to Redis: %s", family_id, exc)


async def is_known_revoked(redis: Any | None, family_id: uuid.UUID) -> bool:
    """True when Redis knows the family is revoked; False when it does not (or cannot say)."""
    if redis is None:
        return False
    try:
        async with asyncio.timeout(_TIMEOUT):
            return bool(await redis.exists(family_key(family_id)))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not check family %s in Redis: %s", family_id, exc)
        return False
