"""Refund settling: refund claims the provider never answered (a timeout, a 5xx, a process that
stopped mid-call) and nobody retried are asked again with the same provider idempotency key,
so the money goes back exactly once. The rule lives in services.payments.refunds."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.services.payments.refunds import settle_unanswered

if TYPE_CHECKING:
    from server.context import AppContext

log = logging.getLogger(__name__)

# A claim younger than this may still be waiting for its answer (the provider's timeout is 10 s).
ANSWER_GRACE_SECONDS = 60.0


async def settle_unanswered_refunds(ctx: AppContext) -> int:
    """Ask again for the unanswered refund claims; returns how many were settled."""
    if ctx.payments is None:
        return 0
    settled = await settle_unanswered(ctx, older_than=ANSWER_GRACE_SECONDS)
    if settled:
        log.info("refund settling: settled %d unanswered refund(s)", settled)
    return settled
