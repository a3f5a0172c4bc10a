"""E-mail outbox delivery against a real PostgreSQL and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from server.config import Settings
from server.context import AppContext
from tests.conftest import free_port
from tests.workers.logs import json_lines
from tests.workers.smtp import smtp_server
from workers.tasks.outbox import (
    LogMailer,
    RetryPolicy,
    SmtpConfig,
    SmtpMailer,
    deliver_due,
    mailer_for,
)

SENDER = "shop@storefront.test"
NO_WAIT = RetryPolicy(max_attempts=3, base_delay=0.0)


@pytest_asyncio.fixture(autouse=True)
async def empty_outbox(ctx: AppContext) -> AsyncIterator[None]:
    await ctx.pool.execute("DELETE FROM outbox")
    yield


async def add_mail(
    ctx: AppContext,
    *,
    kind: str = "order_confirmation",
    recipient: str = "ada@example.com",
    subject: str = "Your order 7",
    body: str = "Thank you for your order.",
) -> int:
    outbox_id: int = await ctx.pool.fetchval(
        """INSERT INTO outbox (kind, recipient, subject, body, dedupe_key)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        kind,
        recipient,
        subject,
        body,
        f"test:{os.urandom(6).hex()}",
    )
    return outbox_id


async def row(ctx: AppContext, outbox_id: int) -> dict[str, object]:
    record = await ctx.pool.fetchrow(
        """SELECT status, attempts, last_error, sent_at,
                  extract(epoch FROM next_attempt_at - now()) AS due_in
             FROM outbox WHERE id = $1""",
        outbox_id,
    )
    assert record is not None
    return dict(record)


async def test_due_mail_is_sent_over_smtp_and_marked_sent(ctx: AppContext) -> None:
    confirmation = await add_mail(ctx, subject="Order 7 confirmed", body="3 x Teapot")
    alert = await add_mail(
        ctx,
        kind="low_stock",
        recipient="admin@example.com",
        subject="Low stock: Teapot",
        body="2 left",
    )
    with smtp_server() as (mailbox, url):
        report = await deliver_due(ctx.pool, SmtpMailer(SmtpConfig.parse(url), SENDER))

    assert (report.sent, report.retrying, report.dead) == (2, 0, 0)
    [message] = mailbox.for_outbox_id(confirmation)
    assert message["From"] == SENDER and message["To"] == "ada@example.com"
    assert message["Subject"] == "Order 7 confirmed"
    assert message["X-Storefront-Kind"] == "order_confirmation"
    assert message.get_content().strip() == "3 x Teapot"
    [low_stock] = mailbox.for_outbox_id(alert)
    assert low_stock["To"] == "admin@example.com" and low_stock["X-Storefront-Kind"] == "low_stock"
    for outbox_id in (confirmation, alert):
        state = await row(ctx, outbox_id)
        assert state["status"] == "sent" and state["attempts"] == 1 and state["sent_at"]


async def test_a_subject_with_line_breaks_is_sent_on_one_line(ctx: AppContext) -> None:
    """Low-stock subjects carry product names, which may hold line breaks."""
    alert = await add_mail(ctx, kind="low_stock", subject="Low stock: Teapot\nBlue\r\n (T-1)")
    with smtp_server() as (mailbox, url):
        report = await deliver_due(ctx.pool, SmtpMailer(SmtpConfig.parse(url), SENDER))
    assert report.sent == 1
    [message] = mailbox.for_outbox_id(alert)
    assert message["Subject"] == "Low stock: Teapot Blue (T-1)"


async def test_a_mail_that_cannot_be_built_is_dead_and_the_batch_goes_on(
    ctx: AppContext,
) -> None:
    before = await add_mail(ctx, subject="Order 1 confirmed")
    broken = await add_mail(ctx, recipient="<")  # the email package cannot build this one
    after = await add_mail(ctx, subject="Order 2 confirmed")
    with smtp_server() as (mailbox, url):
        mailer = SmtpMailer(SmtpConfig.parse(url), SENDER)
        report = await deliver_due(ctx.pool, mailer, policy=NO_WAIT)
        again = await deliver_due(ctx.pool, mailer, policy=NO_WAIT)
    assert (report.sent, report.dead) == (2, 1) and again.sent == again.dead == 0
    assert [len(mailbox.for_outbox_id(i)) for i in (before, broken, after)] == [1, 0, 1]
    state = await row(ctx, broken)
    assert state["status"] == "dead" and "Unsendable" in str(state["last_error"])


async def test_sent_mail_is_not_sent_again(ctx: AppContext) -> None:
    await add_mail(ctx)
    with smtp_server() as (mailbox, url):
        mailer = SmtpMailer(SmtpConfig.parse(url), SENDER)
        first = await deliver_due(ctx.pool, mailer)
        second = await deliver_due(ctx.pool, mailer)
    assert first.sent == 1 and second.sent == 0 and len(mailbox.messages) == 1


async def test_a_temporary_refusal_is_retried_with_backoff(ctx: AppContext) -> None:
    outbox_id = await add_mail(ctx)
    policy = RetryPolicy(max_attempts=8, base_delay=60.0)
    with smtp_server("451 4.3.0 try again later") as (mailbox, url):
        mailer = SmtpMailer(SmtpConfig.parse(url), SENDER)
        report = await deliver_due(ctx.pool, mailer, policy=policy)
        state = await row(ctx, outbox_id)
        assert report.retrying == 1 and state["status"] == "pending" and state["attempts"] == 1
        assert "451" in str(state["last_error"])
        assert 55 < float(state["due_in"]) <= 60  # type: ignore[arg-type]
        # Not due yet: nothing is attempted.
        assert (await deliver_due(ctx.pool, mailer, policy=policy)).retrying == 0
        # Due again: the second failure waits twice as long.
        await ctx.pool.execute("UPDATE outbox SET next_attempt_at = now() WHERE id = $1", outbox_id)
        await deliver_due(ctx.pool, mailer, policy=policy)
        state = await row(ctx, outbox_id)
        assert state["attempts"] == 2 and 115 < float(state["due_in"]) <= 120  # type: ignore[arg-type]
    assert mailbox.attempts == 2


async def test_mail_is_dead_after_the_last_attempt_fails(ctx: AppContext) -> None:
    outbox_id = await add_mail(ctx)
    with smtp_server("451 4.3.0 try again later") as (mailbox, url):
        mailer = SmtpMailer(SmtpConfig.parse(url), SENDER)
        reports = [await deliver_due(ctx.pool, mailer, policy=NO_WAIT) for _ in range(4)]
    assert [(r.retrying, r.dead) for r in reports] == [(1, 0), (1, 0), (0, 1), (0, 0)]
    state = await row(ctx, outbox_id)
    assert state["status"] == "dead" and state["attempts"] == 3 and mailbox.attempts == 3


async def test_a_permanent_refusal_is_dead_at_once(ctx: AppContext) -> None:
    outbox_id = await add_mail(ctx)
    with smtp_server("550 5.1.1 no such mailbox") as (_, url):
        report = await deliver_due(ctx.pool, SmtpMailer(SmtpConfig.parse(url), SENDER))
    assert report.dead == 1 and (await row(ctx, outbox_id))["status"] == "dead"


async def test_an_unreachable_server_is_retried(ctx: AppContext) -> None:
    outbox_id = await add_mail(ctx)
    closed = SmtpConfig.parse(f"smtp://127.0.0.1:{free_port()}")
    report = await deliver_due(ctx.pool, SmtpMailer(closed, SENDER, timeout=2.0))
    state = await row(ctx, outbox_id)
    assert report.retrying == 1 and state["status"] == "pending" and state["attempts"] == 1


async def test_a_sending_row_whose_lease_expired_is_sent_again(ctx: AppContext) -> None:
    abandoned = await add_mail(ctx)
    in_progress = await add_mail(ctx)
    # A worker died mid-send (lease over), another is sending right now (lease running).
    await ctx.pool.execute(
        """UPDATE outbox SET status = 'sending', attempts = 1,
                  next_attempt_at = now() - interval '1 second' WHERE id = $1""",
        abandoned,
    )
    await ctx.pool.execute(
        """UPDATE outbox SET status = 'sending', attempts = 1,
                  next_attempt_at = now() + interval '5 minutes' WHERE id = $1""",
        in_progress,
    )
    with smtp_server() as (mailbox, url):
        report = await deliver_due(ctx.pool, SmtpMailer(SmtpConfig.parse(url), SENDER))
    assert report.sent == 1 and len(mailbox.for_outbox_id(abandoned)) == 1
    assert (await row(ctx, abandoned))["attempts"] == 2
    assert (await row(ctx, in_progress))["status"] == "sending"


async def test_two_deliveries_at_once_send_each_mail_once(ctx: AppContext) -> None:
    ids = [await add_mail(ctx, subject=f"Order {i}") for i in range(30)]
    with smtp_server() as (mailbox, url):
        mailer = SmtpMailer(SmtpConfig.parse(url), SENDER)
        reports = await asyncio.gather(*(deliver_due(ctx.pool, mailer, batch=4) for _ in range(3)))
    assert sum(r.sent for r in reports) == 30
    delivered = sorted(int(m["X-Storefront-Outbox-Id"]) for m in mailbox.messages)
    assert delivered == sorted(ids)
    assert await ctx.pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'sent'") == 30


async def test_without_smtp_url_mail_is_logged_as_json_and_marked_sent(ctx: AppContext) -> None:
    outbox_id = await add_mail(ctx, subject="Order 9", body="1 x Kettle")
    mailer = mailer_for(Settings(smtp_url=None, mail_from=SENDER))
    assert isinstance(mailer, LogMailer)
    with json_lines("storefront.mail") as lines:
        report = await deliver_due(ctx.pool, mailer)
    assert report.sent == 1 and (await row(ctx, outbox_id))["status"] == "sent"
    [line] = lines
    assert line["outbox_id"] == outbox_id and line["to"] == "ada@example.com"
    assert line["subject"] == "Order 9" and line["body"] == "1 x Kettle"
    assert line["level"] == "INFO" and line["logger"] == "storefront.mail"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("smtp://mail.example.com", ("mail.example.com", 25, None, None, False, None)),
        (
            "smtp://u%40x:p%3Ass@mail.example.com:2525?starttls=1",
            ("mail.example.com", 2525, "u@x", "p:ss", False, True),
        ),
        ("smtp://mail.example.com?starttls=1", ("mail.example.com", 587, None, None, False, True)),
        (
            "smtp://mail.example.com:25?starttls=0",
            ("mail.example.com", 25, None, None, False, False),
        ),
        (
            "smtps://me:secret@mail.example.com",
            ("mail.example.com", 465, "me", "secret", True, False),
        ),
    ],
)
def test_smtp_url_is_parsed(url: str, expected: tuple[object, ...]) -> None:
    config = SmtpConfig.parse(url)
    assert (
        config.hostname,
        config.port,
        config.username,
        config.password,
        config.use_tls,
        config.start_tls,
    ) == expected


def test_smtp_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="SMTP_URL"):
        SmtpConfig.parse("http://mail.example.com")
