"""Argon2id password hashing on a small, bounded thread pool of its own.

Parameters: OWASP's Password Storage Cheat Sheet, first Argon2id option (m = 19 MiB, t = 2,
p = 1): ~25 ms a hash on this project's 2-vCPU machines, where argon2-cffi's defaults (RFC 9106
low-memory, m = 64 MiB, t = 3, p = 4) took ~175 ms and queued registration bursts for seconds.
The trade-off is written up in docs/performance.md. Hashes made with other parameters (older
accounts) still verify, and are re-hashed with these on the next successful login.

Why a pool of its own: argon2 releases the GIL, so hashing runs beside the event loop, but the
default executor is shared with every other `to_thread` and unbounded. Here at most `WORKERS`
hashes run at once (half the cores: the loop, PostgreSQL and Redis keep the rest) and at most
`MAX_WAITING` wait; beyond that a sign-in or registration is refused at once with 503 and
Retry-After rather than queued for seconds. `password_hash_*` metrics show the queue.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server import metrics
from server.domain.errors import Unavailable

T = TypeVar("T")

TIME_COST, MEMORY_COST_KIB, PARALLELISM = 2, 19 * 1024, 1
_hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM)
# Verified against when the e-mail is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("storefront-timing-equaliser")

WORKERS = max(1, (os.cpu_count() or 2) // 2)
MAX_WAITING = 64
_executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="argon2")
_pending = 0  # submitted and not finished: running plus waiting (the loop's thread only)


async def _run(function: Callable[..., T], *args: object) -> T:
    global _pending
    if _pending >= WORKERS + MAX_WAITING:
        metrics.PASSWORD_HASH_REJECTED.inc()
        raise Unavailable("sign-in is busy; try again in a moment", retry_after=1)
    submitted = time.perf_counter()

    def timed() -> T:
        started = time.perf_counter()
        metrics.PASSWORD_HASH_WAIT.observe(started - submitted)
        try:
            return function(*args)
        finally:
            metrics.PASSWORD_HASH_DURATION.observe(time.perf_counter() - started)

    _pending += 1
    metrics.PASSWORD_HASH_PENDING.set(_pending)
    try:
        return await asyncio.get_running_loop().run_in_executor(_executor, timed)
    finally:
        _pending -= 1
        metrics.PASSWORD_HASH_PENDING.set(_pending)


async def hash_password(password: str) -> str:
    return await _run(_hasher.hash, password)


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches; with `stored_hash=None` it burns the same time and fails."""
    return await _run(_verify, stored_hash, password)


def needs_rehash(stored_hash: str) -> bool:
    """Made with other parameters than today's (re-hash it after a successful login)."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False
