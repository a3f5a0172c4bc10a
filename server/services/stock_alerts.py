"""Low-stock alerts: a variant whose stock falls below LOW_STOCK_THRESHOLD (from at or above it)
gets a `stock.low` event and an e-mail to the admins, written in the transaction that moved the
stock, whichever move it was: a checkout, an admin's stock PATCH, or gRPC AdjustStock."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from server.config import Settings
from server.db import orders as orders_db
from server.db.orders import Mail
from server.db.variants import VariantRecord
from server.services import events


@dataclass(frozen=True, slots=True)
class StockFall:
    """A variant's stock after a move that took it below the threshold."""

    product_id: int
    variant_id: int
    sku: str
    name: str  # the product's
    stock: int


def fell_below(settings: Settings, before: int, after: int) -> bool:
    return after < settings.low_stock_threshold <= before


async def alert_mails(
    conn: asyncpg.Connection, settings: Settings, falls: list[StockFall], after: str, key: str
) -> list[Mail]:
    """One alert per fallen variant per admin; `after` says what moved the stock ("order #7"),
    `key` makes the rows unique to that move (the outbox dedupes on it)."""
    if not falls:
        return []
    recipients = await orders_db.admin_emails(conn) or [settings.mail_from]
    threshold = settings.low_stock_threshold
    mails: list[Mail] = []
    for fall in falls:
        subject = f"Low stock: {fall.name} ({fall.sku})"
        body = (
            f"Product #{fall.product_id} {fall.name}, variant {fall.sku}, has {fall.stock} left "
            f"in stock (threshold {threshold}) after {after}.\n"
        )
        for recipient in recipients:
            mails.append(
                Mail(
                    "low_stock",
                    recipient,
                    subject,
                    body,
                    f"low_stock:{fall.variant_id}:{key}:{recipient}",
                )
            )
    return mails


async def emit_alerts(conn: asyncpg.Connection, settings: Settings, falls: list[StockFall]) -> None:
    for fall in falls:
        await events.emit(
            conn,
            "stock.low",
            {
                "product_id": fall.product_id,
                "variant_id": fall.variant_id,
                "sku": fall.sku,
                "stock": fall.stock,
                "threshold": settings.low_stock_threshold,
            },
        )


async def alert_if_low(
    conn: asyncpg.Connection, settings: Settings, variant: VariantRecord, before: int
) -> bool:
    """The alert of an admin's stock change (PATCH, AdjustStock) that took `variant` below the
    threshold, in its transaction; True when mail was written (the caller nudges the outbox
    after the commit)."""
    if not fell_below(settings, before, variant.stock):
        return False
    falls = [
        StockFall(variant.product_id, variant.id, variant.sku, variant.product_name, variant.stock)
    ]
    key = f"adjust-{secrets.token_hex(8)}"  # every adjustment is its own move
    await orders_db.enqueue_mail(
        conn, await alert_mails(conn, settings, falls, "a stock adjustment", key)
    )
    await emit_alerts(conn, settings, falls)
    return True
