"""A real SMTP server for the tests (aiosmtpd on a free port, in its own thread)."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import free_port


class Mailbox:
    """Accepts every message (or answers every DATA with `reply`) and keeps what it accepted."""

    def __init__(self, reply: str | None = None) -> None:
        self.reply = reply
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.attempts = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.attempts += 1
            if self.reply is not None:
                return self.reply
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def for_outbox_id(self, outbox_id: int) -> list[EmailMessage]:
        return [m for m in self.messages if m["X-Storefront-Outbox-Id"] == str(outbox_id)]


@contextmanager
def smtp_server(reply: str | None = None) -> Iterator[tuple[Mailbox, str]]:
    """A running server and its SMTP_URL; `reply` (e.g. "451 4.3.0 later") refuses every mail."""
    mailbox = Mailbox(reply)
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, f"smtp://127.0.0.1:{port}?starttls=0"
    finally:
        controller.stop()
