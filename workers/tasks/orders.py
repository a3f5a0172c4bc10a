"""Order processing: pending orders past ORDER_PAYMENT_TIMEOUT are cancelled and restocked.

The rule lives in the orders service (`cancel_expired_unpaid`: batches, SKIP LOCKED, so two
runs at once never restock an order twice); this job runs it and, since stock came back,
retires the cached pages of the products it gave stock back to.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.services import events
from server.services.catalog_cache import stock_changed
from server.services.orders import cancel_expired_unpaid

if TYPE_CHECKING:
    from server.context import AppContext

log = logging.getLogger(__name__)


async def cancel_unpaid_orders(ctx: AppContext) -> int:
    """Cancel the expired pending orders; returns how many were cancelled."""
    restocked: set[int] = set()
    async with events.collecting(ctx), ctx.pool.acquire() as conn:
        cancelled = await cancel_expired_unpaid(conn, restocked)
    if cancelled:
        await stock_changed(ctx, restocked)
        log.info("order processing: cancelled %d unpaid order(s)", cancelled)
    return cancelled
