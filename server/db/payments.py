"""Payments repository: payment attempts of an order, their refunds, and the provider webhook
events already applied. Running totals (`captured`, `refunded`) move only by conditional
UPDATEs, so concurrent refunds can never together exceed what was captured."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class PaymentRecord(msgspec.Struct, frozen=True):
    id: int
    order_id: int
    provider: str
    reference: str | None
    status: str
    amount: int
    captured: int
    refunded: int
    currency: str
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class RestockLine(msgspec.Struct, frozen=True):
    variant_id: int
    quantity: int


class RefundRecord(msgspec.Struct, frozen=True):
    id: int
    payment_id: int
    order_id: int
    amount: int
    status: str
    reference: str | None
    reason: str | None
    restocked: list[RestockLine]
    created_at: datetime
    request_hash: str | None = None
    # What the claim asked to put back on sale; `restocked` is what its settlement did.
    restock_plan: list[RestockLine] = []

    @property
    def unanswered(self) -> bool:
        """Claimed, but the provider's answer never arrived (a provider-pending refund has its
        reference): asking again with the same provider key is safe."""
        return self.status == "pending" and self.reference is None


_PAYMENT_COLUMNS = (
    "id, order_id, provider, reference, status, amount, captured, refunded, currency, "
    "failure_reason, created_at, updated_at"
)
_REFUND_COLUMNS = (
    "id, payment_id, order_id, amount, status, reference, reason, restocked, created_at, "
    "request_hash, restock_plan"
)
LIVE = ("pending", "authorized", "captured", "partially_refunded", "refunded")


def _payment(row: asyncpg.Record) -> PaymentRecord:
    return PaymentRecord(**dict(row))


def _refund(row: asyncpg.Record) -> RefundRecord:
    values: dict[str, Any] = dict(row)
    values["restocked"] = [RestockLine(**line) for line in values["restocked"]]
    values["restock_plan"] = [RestockLine(**line) for line in values["restock_plan"]]
    return RefundRecord(**values)


async def insert_payment(
    conn: Executor, order_id: int, provider: str, amount: int, currency: str
) -> PaymentRecord | None:
    """A new `pending` attempt; None when the order already has a live payment."""
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO payments (order_id, provider, status, amount, currency)
                VALUES ($1, $2, 'pending', $3, $4) RETURNING {_PAYMENT_COLUMNS}""",
            order_id,
            provider,
            amount,
            currency,
        )
    except asyncpg.UniqueViolationError:
        return None
    assert row is not None
    return _payment(row)


async def get_payment(
    conn: Executor, payment_id: int, *, for_update: bool = False
) -> PaymentRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = $1{lock}", payment_id
    )
    return _payment(row) if row else None


async def by_reference(
    conn: Executor, provider: str, reference: str, *, for_update: bool = False
) -> PaymentRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND reference = $2{lock}",
        provider,
        reference,
    )
    return _payment(row) if row else None


async def live_payment(
    conn: Executor, order_id: int, *, for_update: bool = False
) -> PaymentRecord | None:
    """The order's payment that is not failed or voided (at most one exists)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"""SELECT {_PAYMENT_COLUMNS} FROM payments
             WHERE order_id = $1 AND status <> ALL($2::text[]){lock}""",
        order_id,
        ["failed", "voided"],
    )
    return _payment(row) if row else None


async def abandon_pending(conn: Executor, order_ids: list[int]) -> None:
    """The orders expired while a payment never got the provider's answer: that attempt is
    failed. (If the provider captures it after all, the capture is recorded and refunded in
    full: services.payments.captures.)"""
    await conn.execute(
        """UPDATE payments SET status = 'failed', updated_at = now(),
                  failure_reason = 'the order expired before the provider confirmed'
            WHERE order_id = ANY($1::bigint[]) AND status = 'pending'""",
        order_ids,
    )


async def payments_of(conn: Executor, order_id: int) -> list[PaymentRecord]:
    rows = await conn.fetch(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY id", order_id
    )
    return [_payment(r) for r in rows]


async def settle(
    conn: Executor,
    payment_id: int,
    *,
    status: str,
    reference: str | None = None,
    captured: int | None = None,
    failure_reason: str | None = None,
) -> PaymentRecord:
    """Record what the provider answered (status, its reference, the captured total)."""
    row = await conn.fetchrow(
        f"""UPDATE payments SET status = $2, reference = coalesce($3, reference),
                   captured = coalesce($4, captured), failure_reason = $5, updated_at = now()
             WHERE id = $1 RETURNING {_PAYMENT_COLUMNS}""",
        payment_id,
        status,
        reference,
        captured,
        failure_reason,
    )
    assert row is not None
    return _payment(row)


async def add_refunded(
    conn: Executor, payment_id: int, amount: int, *, allow_any: bool = False
) -> PaymentRecord | None:
    """Count `amount` more as refunded (negative: give back a claim that failed); None
    (nothing counted) when that would pass what was captured. The status follows: refunded when
    all of it is back, partially_refunded when some is, captured when none is. `allow_any`
    also applies it to a payment already marked refunded (the undo of a failed claim)."""
    states = ["captured", "partially_refunded"] + (["refunded"] if allow_any else [])
    row = await conn.fetchrow(
        f"""UPDATE payments
               SET refunded = refunded + $2,
                   status = CASE WHEN refunded + $2 = captured THEN 'refunded'
                                 WHEN refunded + $2 = 0 THEN 'captured'
                                 ELSE 'partially_refunded' END,
                   updated_at = now()
             WHERE id = $1 AND status = ANY($3::text[])
               AND refunded + $2 BETWEEN 0 AND captured
         RETURNING {_PAYMENT_COLUMNS}""",
        payment_id,
        amount,
        states,
    )
    return _payment(row) if row else None


async def captured_payment(conn: Executor, order_id: int) -> PaymentRecord | None:
    """The order's payment holding captured money, row-locked (refunds serialise on it)."""
    row = await conn.fetchrow(
        f"""SELECT {_PAYMENT_COLUMNS} FROM payments
             WHERE order_id = $1 AND status IN ('captured', 'partially_refunded', 'refunded')
             ORDER BY id DESC LIMIT 1 FOR UPDATE""",
        order_id,
    )
    return _payment(row) if row else None


async def get_refund(
    conn: Executor, refund_id: int, *, for_update: bool = False
) -> RefundRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE id = $1{lock}", refund_id
    )
    return _refund(row) if row else None


async def unanswered_refunds(conn: Executor, older_than: float, limit: int) -> list[int]:
    """Ids of refund claims the provider has not answered for `older_than` seconds."""
    rows = await conn.fetch(
        """SELECT id FROM refunds
            WHERE status = 'pending' AND reference IS NULL
              AND created_at < now() - make_interval(secs => $1)
            ORDER BY created_at LIMIT $2""",
        older_than,
        limit,
    )
    return [r["id"] for r in rows]


async def succeeded_refunds(conn: Executor, payment_id: int) -> int:
    """What the provider has confirmed it paid back of a payment (claims it has not answered,
    and refunds it answered `pending`, are counted in `payments.refunded`, not here)."""
    total = await conn.fetchval(
        """SELECT coalesce(sum(amount), 0) FROM refunds
            WHERE payment_id = $1 AND status = 'succeeded'""",
        payment_id,
    )
    return int(total)


async def refund_by_reference(
    conn: Executor, payment_id: int, reference: str, *, for_update: bool = False
) -> RefundRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 AND reference = $2{lock}",
        payment_id,
        reference,
    )
    return _refund(row) if row else None


async def refund_by_key(conn: Executor, order_id: int, key: str) -> RefundRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE order_id = $1 AND idempotency_key = $2",
        order_id,
        key,
    )
    return _refund(row) if row else None


async def finish_refund(
    conn: Executor,
    refund_id: int,
    status: str,
    reference: str | None,
    restocked: list[RestockLine],
    *,
    reason: str | None = None,
) -> RefundRecord:
    row = await conn.fetchrow(
        f"""UPDATE refunds SET status = $2, reference = $3, restocked = $4,
                   reason = coalesce($5, reason)
             WHERE id = $1 RETURNING {_REFUND_COLUMNS}""",
        refund_id,
        status,
        reference,
        msgspec.to_builtins(restocked),
        reason,
    )
    assert row is not None
    return _refund(row)


async def insert_refund(
    conn: Executor,
    payment: PaymentRecord,
    amount: int,
    *,
    status: str,
    reference: str | None,
    reason: str | None,
    restocked: list[RestockLine],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    restock_plan: list[RestockLine] | None = None,
) -> RefundRecord:
    row = await conn.fetchrow(
        f"""INSERT INTO refunds (payment_id, order_id, amount, status, reference, reason,
                                 restocked, idempotency_key, request_hash, restock_plan)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_REFUND_COLUMNS}""",
        payment.id,
        payment.order_id,
        amount,
        status,
        reference,
        reason,
        msgspec.to_builtins(restocked),
        idempotency_key,
        request_hash,
        msgspec.to_builtins(restock_plan or []),
    )
    assert row is not None
    return _refund(row)


async def refunds_of(conn: Executor, order_id: int) -> list[RefundRecord]:
    rows = await conn.fetch(
        f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE order_id = $1 ORDER BY id", order_id
    )
    return [_refund(r) for r in rows]


async def record_event(
    conn: Executor, provider: str, event_id: str, signed_at: int, event_type: str
) -> str:
    """Note a webhook delivery: "new" the first time an event id is seen, "replay" for the
    same signed delivery again, "duplicate" for a re-delivery (new signature) of a known one."""
    inserted = await conn.fetchval(
        """INSERT INTO payment_events (provider, event_id, signed_at, type)
           VALUES ($1, $2, $3, $4) ON CONFLICT (provider, event_id) DO NOTHING
        RETURNING 1""",
        provider,
        event_id,
        signed_at,
        event_type,
    )
    if inserted is not None:
        return "new"
    seen_at = await conn.fetchval(
        "SELECT signed_at FROM payment_events WHERE provider = $1 AND event_id = $2",
        provider,
        event_id,
    )
    return "replay" if seen_at == signed_at else "duplicate"
