"""Argon2id hashing: OWASP parameters at least, its own bounded pool, re-hash of old accounts."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type

from server import metrics
from server.context import AppContext
from server.db import users
from server.domain.errors import Unavailable
from server.services import accounts, passwords

PASSWORD = "correct horse battery"


def _count(histogram: Any) -> float:
    return sum(bucket.get() for bucket in histogram._buckets)


async def test_hashes_meet_owasp_argon2id_minimums() -> None:
    hashed = await passwords.hash_password(PASSWORD)
    assert not passwords.needs_rehash(hashed)
    algorithm, version, costs = hashed.split("$")[1:4]
    values = dict(pair.split("=") for pair in costs.split(","))
    assert algorithm == "argon2id" and version == "v=19"
    # OWASP Password Storage Cheat Sheet: m >= 19 MiB with t >= 2 (p = 1).
    assert int(values["m"]) >= 19 * 1024 and int(values["t"]) >= 2 and int(values["p"]) >= 1
    assert await passwords.verify_password(hashed, PASSWORD)
    assert not await passwords.verify_password(hashed, PASSWORD + "!")
    assert not await passwords.verify_password(None, PASSWORD)
    assert not await passwords.verify_password("not-a-hash", PASSWORD)


async def test_hashing_runs_on_its_own_threads_not_the_loop() -> None:
    hashed_before = metrics.PASSWORD_HASH_DURATION._sum.get(), _count(metrics.PASSWORD_HASH_WAIT)
    await passwords.hash_password(PASSWORD)
    await passwords.verify_password(None, PASSWORD)
    # Both went through the pool: each was timed on a pool thread after its wait.
    assert _count(metrics.PASSWORD_HASH_WAIT) == hashed_before[1] + 2
    assert metrics.PASSWORD_HASH_DURATION._sum.get() > hashed_before[0]
    names = await asyncio.gather(
        *(passwords._run(lambda: threading.current_thread().name) for _ in range(4))
    )
    assert all(name.startswith("argon2") for name in names), names
    assert threading.current_thread().name not in names


async def test_a_full_queue_refuses_at_once_with_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "MAX_WAITING", 3)
    capacity = passwords.WORKERS + 3
    rejected = metrics.PASSWORD_HASH_REJECTED._value.get()
    results = await asyncio.gather(
        *(passwords.hash_password(PASSWORD) for _ in range(capacity + 5)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 5 and all(isinstance(r, Unavailable) for r in refused), results
    assert all(r.retry_after == 1 for r in refused if isinstance(r, Unavailable))
    assert metrics.PASSWORD_HASH_REJECTED._value.get() == rejected + 5
    assert passwords._pending == 0 and metrics.PASSWORD_HASH_PENDING._value.get() == 0
    assert await passwords.hash_password(PASSWORD)  # room again


async def test_an_old_accounts_hash_is_upgraded_on_login(ctx: AppContext) -> None:
    old = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, type=Type.ID)
    email = f"old-{uuid.uuid4().hex[:10]}@example.com"
    user = await users.create_user(ctx.pool, email, "", old.hash(PASSWORD), "customer")
    assert passwords.needs_rehash(user.password_hash)

    await accounts.login(ctx, email, PASSWORD)

    upgraded = await users.get_by_email(ctx.pool, email)
    assert upgraded is not None and upgraded.password_hash != user.password_hash
    assert not passwords.needs_rehash(upgraded.password_hash)
    await accounts.login(ctx, email, PASSWORD)  # the new hash verifies
    still = await users.get_by_email(ctx.pool, email)
    assert still is not None and still.password_hash == upgraded.password_hash
