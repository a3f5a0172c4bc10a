"""E-mail outbox delivery: order confirmations and low-stock alerts, written by the checkout in
its own transaction (`outbox` rows), sent here over SMTP with retries.

A row moves `pending → sending → sent`, or back to `pending` with a later `next_attempt_at`
after a failure (exponential backoff), or to `dead` after `max_attempts` attempts or a
permanent refusal (an SMTP 5xx). Claiming is one statement with `FOR UPDATE SKIP LOCKED` that
sets `sending` and a lease (`next_attempt_at = now() + lease`): two deliveries at once take
different rows, and a row whose worker died mid-send is claimed again once its lease is over
(delivery is at least once).

`SMTP_URL`: `smtp://user:pass@host:port` (STARTTLS when the server offers it; `?starttls=1`
requires it, `?starttls=0` never uses it) or `smtps://…` (TLS from the first byte). Without
`SMTP_URL` each message is written to the log as one JSON line and marked sent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import asyncpg

from server import metrics
from server.config import ConfigError, Settings
from server.db import outbox as outbox_db
from server.db.outbox import OutboxMail

log = logging.getLogger(__name__)
mail_log = logging.getLogger("storefront.mail")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 60.0  # after the first failure; doubles each time
    max_delay: float = 6 * 3600.0
    lease: float = 300.0  # how long a claimed row is left to its worker

    def delay(self, attempts: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    dead: int = 0


class Mailer(Protocol):
    async def send(self, mails: Sequence[OutboxMail]) -> list[Exception | None]:
        """Send each mail; the result per mail is None (accepted) or why it failed."""
        ...


# ---- transports --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    hostname: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None  # None: when the server offers it

    @classmethod
    def parse(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
        implicit_tls = parts.scheme == "smtps"
        flag = parse_qs(parts.query).get("starttls", [None])[0]
        start_tls: bool | None = None
        if flag is not None:
            start_tls = flag.lower() in ("1", "true", "yes", "on")
        if implicit_tls:
            start_tls = False
        port = parts.port or (465 if implicit_tls else 587 if start_tls else 25)
        return cls(
            hostname=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit_tls,
            start_tls=start_tls,
        )


def _one_line(value: str) -> str:
    """A header value on one line: subjects are built from product names, which may hold line
    breaks, and a header cannot."""
    return " ".join(value.split())


class Unsendable(Exception):
    """The message cannot be built from its row (retrying will not change that)."""


def compose(mail: OutboxMail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = _one_line(mail.recipient)
    message["Subject"] = _one_line(mail.subject)
    message["Date"] = formatdate(usegmt=True)
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(idstring=f"outbox-{mail.id}", domain=domain)
    # Lets a recipient (or a test) tie the message to its outbox row, and spot a resend.
    message["X-Storefront-Outbox-Id"] = str(mail.id)
    message["X-Storefront-Kind"] = mail.kind
    message.set_content(mail.body)
    return message


class SmtpMailer:
    """One SMTP session per batch; a failed connection fails the whole batch."""

    def __init__(self, config: SmtpConfig, sender: str, *, timeout: float = 30.0) -> None:
        self.config = config
        self.sender = sender
        self.timeout = timeout

    async def send(self, mails: Sequence[OutboxMail]) -> list[Exception | None]:
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.hostname,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            timeout=self.timeout,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            return [exc] * len(mails)
        results: list[Exception | None] = []
        try:
            for mail in mails:
                try:
                    await client.send_message(compose(mail, self.sender))
                    results.append(None)
                except (aiosmtplib.SMTPException, OSError) as exc:
                    results.append(exc)
                except Exception as exc:  # the email package refused the row: only this mail
                    results.append(Unsendable(f"{type(exc).__name__}: {exc}"))
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        return results


class LogMailer:
    """No SMTP server configured: each message becomes one JSON log line."""

    def __init__(self, sender: str) -> None:
        self.sender = sender

    async def send(self, mails: Sequence[OutboxMail]) -> list[Exception | None]:
        for mail in mails:
            mail_log.info(
                "e-mail (no SMTP_URL, logged instead of sent)",
                extra={
                    "data": {
                        "outbox_id": mail.id,
                        "kind": mail.kind,
                        "from": self.sender,
                        "to": mail.recipient,
                        "subject": mail.subject,
                        "body": mail.body,
                    }
                },
            )
        return [None] * len(mails)


def mailer_for(settings: Settings) -> Mailer:
    if settings.smtp_url:
        return SmtpMailer(SmtpConfig.parse(settings.smtp_url), settings.mail_from)
    return LogMailer(settings.mail_from)


# ---- the outbox ---------------------------------------------------------------------------------


def is_permanent(error: Exception) -> bool:
    """An SMTP 5xx answer will not change by retrying (unknown mailbox, message refused), nor
    will a message that cannot be built."""
    if isinstance(error, Unsendable):
        return True
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return bool(error.recipients) and all(500 <= r.code < 600 for r in error.recipients)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return 500 <= error.code < 600
    return False


async def deliver_due(
    pool: asyncpg.Pool,
    mailer: Mailer,
    *,
    policy: RetryPolicy | None = None,
    batch: int = 50,
    max_batches: int = 20,
) -> DeliveryReport:
    """Send what is due, batch by batch, until nothing is due (or `max_batches` were sent)."""
    policy = policy or RetryPolicy()
    sent = retrying = dead = 0
    for _ in range(max_batches):
        mails = await outbox_db.claim_due(pool, batch, policy.lease)
        if not mails:
            break
        results = await mailer.send(mails)
        ids: list[int] = []
        statuses: list[str] = []
        delays: list[float] = []
        errors: list[str | None] = []
        for mail, error in zip(mails, results, strict=True):
            ids.append(mail.id)
            if error is None:
                statuses.append("sent")
                delays.append(0.0)
                errors.append(None)
                sent += 1
                continue
            give_up = mail.attempts >= policy.max_attempts or is_permanent(error)
            statuses.append("dead" if give_up else "pending")
            delays.append(policy.delay(mail.attempts))
            errors.append(f"{type(error).__name__}: {error}"[:1000])
            if give_up:
                dead += 1
                log.error(
                    "outbox: giving up on mail %d (%s) after %d attempt(s): %s",
                    mail.id,
                    mail.kind,
                    mail.attempts,
                    error,
                )
            else:
                retrying += 1
                log.warning(
                    "outbox: mail %d (%s) failed, attempt %d, retrying in %.0fs: %s",
                    mail.id,
                    mail.kind,
                    mail.attempts,
                    policy.delay(mail.attempts),
                    error,
                )
        await outbox_db.settle(pool, ids, statuses, delays, errors)
        if len(mails) < batch:
            break
    for outcome, count in (("sent", sent), ("retry", retrying), ("dead", dead)):
        if count:
            metrics.OUTBOX_DELIVERIES.labels(outcome).inc(count)
    if sent or retrying or dead:
        log.info("outbox: %d sent, %d to retry, %d dead", sent, retrying, dead)
    return DeliveryReport(sent, retrying, dead)
