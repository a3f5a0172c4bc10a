"""What an unexpected failure (any bug below a handler: a 500) writes to the log and sends to
Sentry must not carry what the request carried: no password from a frame's locals, no token
from a query string. The failures are simulated by a function that raises."""

from __future__ import annotations

import logging
import uuid

import orjson
import pytest
import sentry_sdk

from server.observability import configure_sentry
from server.services import accounts
from tests.conftest import UserFactory, running_gateway
from tests.test_metrics import CapturingTransport

# Made at run time: a literal would show up in the events' source context of this very file.
PASSWORD = f"pw-{uuid.uuid4().hex}"


def broken(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("unexpected failure")  # stands for any bug below the handler


async def test_a_password_never_reaches_sentry_through_a_frames_locals(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_login(*args: object, **kwargs: object) -> None:
        broken()

    monkeypatch.setattr(accounts, "login", broken_login)
    transport = CapturingTransport()
    assert configure_sentry("https://public@sentry.invalid/1", "production", transport=transport)
    try:
        async with running_gateway(database_url, "fast") as (api, _ctx):
            body = {"email": "ada@example.com", "password": PASSWORD}
            assert (await api.post("/api/v1/auth/login", json=body)).status == 500
            sentry_sdk.flush()
    finally:
        sentry_sdk.init()
    assert transport.events, "no event captured"
    dumped = orjson.dumps(transport.events).decode()
    at = dumped.find(PASSWORD)
    assert at < 0, dumped[max(0, at - 300) : at + 40]


async def test_a_stream_token_in_the_query_never_reaches_the_log_or_sentry(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    transport = CapturingTransport()
    assert configure_sentry("https://public@sentry.invalid/1", "production", transport=transport)
    try:
        async with running_gateway(database_url, "fast") as (api, ctx):
            _, token = await UserFactory(ctx).create()
            monkeypatch.setattr(ctx.live, "subscribe", broken)
            with caplog.at_level(logging.ERROR):
                answer = await api.get(f"/api/v1/stream?product_id=1&access_token={token}")
            assert answer.status == 500
            sentry_sdk.flush()
    finally:
        sentry_sdk.init()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Uncaught exception GET /api/v1/stream" in logged
    assert token not in logged
    assert transport.events and token not in orjson.dumps(transport.events).decode()
