"""The e-mails an order sends (written to the outbox in the checkout's transaction)."""

from __future__ import annotations

import asyncpg

from server.config import Settings
from server.db import orders as orders_db
from server.db.orders import Mail, OrderRecord
from server.db.variants import TakenVariant
from server.services.stock_alerts import StockFall, alert_mails, fell_below


def _money(amount: int, currency: str) -> str:
    digits = {
        "JPY": 0,
        "KRW": 0,
        "VND": 0,
        "CLP": 0,
        "ISK": 0,
        "BHD": 3,
        "KWD": 3,
        "JOD": 3,
        "OMR": 3,
        "TND": 3,
    }.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    if not digits:
        return f"{sign}{whole} {currency}"
    return f"{sign}{whole}.{fraction:0{digits}d} {currency}"


def low_stock(
    settings: Settings, taken: list[TakenVariant], quantities: dict[int, int]
) -> list[StockFall]:
    """The variants this order took below LOW_STOCK_THRESHOLD (from at or above it)."""
    return [
        StockFall(t.product_id, t.variant_id, t.sku, t.name, t.stock_after)
        for t in taken
        if fell_below(settings, t.stock_after + quantities[t.variant_id], t.stock_after)
    ]


async def order_mails(
    conn: asyncpg.Connection,
    settings: Settings,
    order: OrderRecord,
    taken: list[TakenVariant],
    quantities: dict[int, int],
) -> list[Mail]:
    mails: list[Mail] = []
    email = await orders_db.email_of(conn, order.user_id)
    if email:
        lines = "\n".join(
            f"  {i.quantity} x {i.name} ({i.sku})  {_money(i.line_total, order.currency)}"
            for i in order.items
        )
        body = (
            f"Thank you for your order #{order.id}.\n\n{lines}\n\n"
            f"Subtotal: {_money(order.subtotal, order.currency)}\n"
            f"Discount: {_money(order.discount, order.currency)}\n"
            f"Tax:      {_money(order.tax, order.currency)}\n"
            f"Total:    {_money(order.total, order.currency)}\n"
        )
        mails.append(
            Mail(
                "order_confirmation",
                email,
                f"Your order #{order.id}",
                body,
                f"order_confirmation:{order.id}",
            )
        )
    falls = low_stock(settings, taken, quantities)
    mails += await alert_mails(conn, settings, falls, f"order #{order.id}", str(order.id))
    return mails
