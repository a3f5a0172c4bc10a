"""Refunds: full or partial, in minor units, optionally putting units back on sale, never more
than was captured, and idempotent by the caller's key.

Three steps, none holding a transaction across the provider call:
1. Claim (one transaction, the payment row locked): check the amount against what is left,
   count it as refunded at once (a conditional UPDATE, so concurrent refunds can never together
   pass what was captured) and write the refund `pending` under the Idempotency-Key, with the
   units it asks to restock.
2. Ask the provider, with `refund-<id>` as its idempotency key.
3. Settle: on success the refund succeeds and the units go back on sale; once the provider has
   taken back everything captured, the order becomes `refunded`. A refusal (the provider said
   no) undoes the claim.

An answer that never arrived (timeout, 5xx, the process stopping) is not a refusal: the
provider may have paid the money back. The claim then stays pending and counted, and is asked
again with the same provider key, so the money goes back at most once: by a retry with the
same Idempotency-Key, or by the refund-settling job (`settle_unanswered`) for claims nobody
retries. A retry with the same key and another body is a 422; a retry of a refund the provider
refused is a 409 (use a new key).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import msgspec

from server.context import AppContext
from server.db import orders as orders_db
from server.db import payments as payments_db
from server.db import variants as variants_db
from server.db.orders import OrderRecord
from server.db.payments import RefundRecord, RestockLine
from server.domain.errors import Conflict, FieldError, NotFound, Unavailable, ValidationFailed
from server.domain.principal import Principal
from server.services import events
from server.services.catalog_cache import stock_changed
from server.services.orders.idempotency import IdempotencyKey
from server.services.orders.reading import visible_to
from server.services.orders.status import announce_stock, apply_move
from server.services.payments.calls import calling_provider, provider_of
from server.services.payments.model import Refund, RefundCreate, refund_view
from server.services.payments.provider import RefundResult

# Order states a full refund moves to `refunded` (a cancelled order stays cancelled).
_REFUNDABLE_ORDER_STATES = ("paid", "shipped", "delivered")
# Stored as the reference of a refund the provider answered without one, so that it no longer
# reads as unanswered.
_NO_REFERENCE = "-"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settlement:
    refund: RefundRecord
    here: bool  # False: another request (same key) or the job settled it first


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    refund: Refund
    replayed: bool


def _restock_plan(order: OrderRecord, data: RefundCreate) -> dict[int, int]:
    """Units (by variant) this refund puts back on sale; ValidationFailed when more than a
    line sold (less what earlier refunds restocked)."""
    if data.items is not msgspec.UNSET and data.restock:
        raise ValidationFailed(
            "give either items or restock: true",
            errors=[FieldError("items", "restock: true already restocks every unit")],
        )
    left = {item.variant_id: item.quantity - item.restocked for item in order.items}
    if data.restock:
        return {v: q for v, q in left.items() if q > 0}
    plan: dict[int, int] = {}
    for index, line in enumerate([] if data.items is msgspec.UNSET else data.items):
        plan[line.variant_id] = plan.get(line.variant_id, 0) + line.quantity
        if line.variant_id not in left:
            raise ValidationFailed(
                "not a line of this order",
                errors=[FieldError(f"items[{index}].variant_id", "not in this order")],
            )
        if plan[line.variant_id] > left[line.variant_id]:
            raise ValidationFailed(
                "more units than this line has left to restock",
                errors=[FieldError(f"items[{index}].quantity", f"at most {left[line.variant_id]}")],
            )
    return plan


def _replay(existing: RefundRecord, request: IdempotencyKey) -> RefundOutcome | RefundRecord:
    """The first refund's answer, or the claim itself when the provider never answered it
    (the caller asks again)."""
    if existing.request_hash != request.request_hash:
        raise ValidationFailed(
            "this Idempotency-Key was used for another refund",
            errors=[FieldError("Idempotency-Key", "reused with a different body")],
        )
    if existing.unanswered:
        return existing
    if existing.status == "failed":
        raise Conflict("the refund with this Idempotency-Key failed; use a new key to retry")
    return RefundOutcome(refund_view(existing), True)


async def _claim(
    conn: asyncpg.Connection,
    order_id: int,
    data: RefundCreate,
    request: IdempotencyKey | None,
) -> RefundRecord | RefundOutcome:
    async with conn.transaction():
        order = await orders_db.get_order(conn, order_id, for_update=True)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        if request is not None:
            existing = await payments_db.refund_by_key(conn, order_id, request.key)
            if existing is not None:
                return _replay(existing, request)
        payment = await payments_db.captured_payment(conn, order_id)
        if payment is None:
            raise Conflict("this order has no captured payment to refund")
        plan = _restock_plan(order, data)
        counted = await payments_db.add_refunded(conn, payment.id, data.amount)
        if counted is None:
            left = payment.captured - payment.refunded
            raise Conflict(
                f"cannot refund {data.amount}: {left} of the {payment.captured} captured is left",
                errors=[FieldError("amount", f"at most {left}", {"refundable": left})],
            )
        return await payments_db.insert_refund(
            conn,
            counted,
            data.amount,
            status="pending",
            reference=None,
            reason=data.reason,
            restocked=[],
            idempotency_key=request.key if request else None,
            request_hash=request.request_hash if request else None,
            restock_plan=[RestockLine(v, q) for v, q in sorted(plan.items())],
        )


async def refund_order(
    ctx: AppContext, order_id: int, data: RefundCreate, request: IdempotencyKey | None = None
) -> RefundOutcome:
    """Refund `data.amount` of the order's captured payment (staff only: the edge checks)."""
    provider_of(ctx)  # a store without payments refuses before anything is claimed
    async with ctx.pool.acquire() as conn:
        claimed = await _claim(conn, order_id, data, request)
    if isinstance(claimed, RefundOutcome):
        return claimed
    settlement = await ask_provider(ctx, claimed)
    # Settled by a concurrent request with the same key: that one answers it, this is a replay.
    return RefundOutcome(refund_view(settlement.refund), replayed=not settlement.here)


async def ask_provider(ctx: AppContext, claim: RefundRecord) -> Settlement:
    """Ask the provider for a claimed refund (again, when its answer was lost) and settle it.

    Unavailable (503) when the provider cannot be asked: the claim stays, to be asked again.
    Conflict (409) when the provider refuses: the claim is undone."""
    provider = provider_of(ctx)
    payment = await payments_db.get_payment(ctx.pool, claim.payment_id)
    assert payment is not None and payment.reference is not None
    try:
        result = await calling_provider(
            provider.refund(payment.reference, claim.amount, f"refund-{claim.id}")
        )
    except Conflict as exc:  # the provider refused the request itself
        await _undo(ctx, claim, exc.detail)
        raise
    except Unavailable as exc:
        raise Unavailable(
            f"{exc.detail}; the refund is kept pending: retry with the same Idempotency-Key",
            retry_after=exc.retry_after,
        ) from None
    if result.status == "failed":
        await _undo(ctx, claim, result.failure_reason or "refused")
        raise Conflict(f"the provider refused the refund: {result.failure_reason}")
    async with events.collecting(ctx), ctx.pool.acquire() as conn:
        settlement, order = await _settle(conn, claim, result)
    if settlement.here and settlement.refund.restocked:
        await stock_changed(ctx, (item.product_id for item in order.items))
    return settlement


async def settle_unanswered(ctx: AppContext, older_than: float = 60.0, limit: int = 100) -> int:
    """The refund-settling job: ask the provider again for claims it never answered (nobody
    retried them); returns how many were settled either way. Safe to run twice at once: the
    provider key makes the calls one refund, and settling re-checks the claim under its lock."""
    settled = 0
    for refund_id in await payments_db.unanswered_refunds(ctx.pool, older_than, limit):
        claim = await payments_db.get_refund(ctx.pool, refund_id)
        if claim is None or not claim.unanswered:
            continue
        try:
            await ask_provider(ctx, claim)
        except Unavailable as exc:
            log.warning("refund %d: the provider is still unreachable (%s)", refund_id, exc.detail)
            break  # the next run tries again; no use asking for the rest now
        except Conflict as exc:
            log.warning("refund %d: the provider refused it (%s)", refund_id, exc.detail)
        settled += 1
    return settled


async def _undo(ctx: AppContext, claim: RefundRecord, why: str) -> None:
    """Give back a claim the provider refused (once: a concurrent settlement wins)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        current = await payments_db.get_refund(conn, claim.id, for_update=True)
        assert current is not None
        if not current.unanswered:
            return
        await payments_db.add_refunded(conn, claim.payment_id, -claim.amount, allow_any=True)
        await payments_db.finish_refund(conn, claim.id, "failed", None, [], reason=why)


async def _settle(
    conn: asyncpg.Connection, claim: RefundRecord, result: RefundResult
) -> tuple[Settlement, OrderRecord]:
    async with conn.transaction():
        order = await orders_db.get_order(conn, claim.order_id, for_update=True)
        current = await payments_db.get_refund(conn, claim.id, for_update=True)
        assert order is not None and current is not None
        if not current.unanswered:
            return Settlement(current, here=False), order  # a concurrent retry or the job did
        # Units another refund restocked meanwhile are not restocked twice (the UPDATE is
        # conditional); what could not be put back is left out of `restocked`.
        restocked = {
            line.variant_id: line.quantity
            for line in claim.restock_plan
            if await orders_db.mark_restocked(conn, order.id, {line.variant_id: line.quantity})
        }
        announce_stock(await variants_db.restock(conn, restocked))
        settled = await payments_db.finish_refund(
            conn,
            claim.id,
            "succeeded" if result.status == "succeeded" else "pending",
            result.reference or _NO_REFERENCE,
            [RestockLine(v, q) for v, q in sorted(restocked.items())],
        )
        await events.emit(
            conn,
            "refund.created",
            msgspec.to_builtins(refund_view(settled)),
            live=[events.order_topic(order.user_id)],
        )
        order = await refunded_when_all_back(conn, order, claim.payment_id)
    return Settlement(settled, here=True), order


async def refunded_when_all_back(
    conn: asyncpg.Connection, order: OrderRecord, payment_id: int
) -> OrderRecord:
    """Make a locked order `refunded` once the provider has confirmed paying back all that was
    captured. Counted by succeeded refunds, not by the claims: a concurrent claim the provider
    then refuses (or a `pending` refund that fails later) must not leave the order refunded
    with money still captured."""
    payment = await payments_db.get_payment(conn, payment_id)
    assert payment is not None
    if order.status not in _REFUNDABLE_ORDER_STATES or payment.captured == 0:
        return order
    if await payments_db.succeeded_refunds(conn, payment_id) < payment.captured:
        return order
    return msgspec.structs.replace(order, status=(await apply_move(conn, order, "refunded")).status)


async def list_refunds(ctx: AppContext, principal: Principal, order_id: int) -> list[Refund]:
    order = await orders_db.get_order(ctx.pool, order_id)
    if order is None or not visible_to(principal, order):
        raise NotFound(f"order {order_id} not found")
    return [refund_view(r) for r in await payments_db.refunds_of(ctx.pool, order_id)]
