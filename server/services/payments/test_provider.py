"""The built-in test provider: no network, outcomes decided by the card token, so tests, demos
and load tests can pay, fail and refund deterministically (Stripe's test cards work alike).

| token | outcome |
|---|---|
| `tok_visa`, `tok_mastercard`, `tok_amex` | approved (captured, or authorised with capture=false) |
| `tok_declined` | failed: card_declined |
| `tok_insufficient_funds` | failed: insufficient_funds |
| `tok_unavailable` | the provider is unreachable (503, nothing recorded as paid) |
| anything else | failed: unknown test card |

Refunds, captures and voids of approved payments always succeed.
"""

from __future__ import annotations

import secrets

from server.services.payments.provider import ChargeResult, ProviderUnavailable, RefundResult

APPROVED = frozenset({"tok_visa", "tok_mastercard", "tok_amex"})
DECLINED = {"tok_declined": "card_declined", "tok_insufficient_funds": "insufficient_funds"}
UNREACHABLE = "tok_unavailable"


class TestProvider:
    name = "test"
    __test__ = False  # not a pytest test class, whatever its name says

    async def authorize(
        self,
        *,
        order_id: int,
        payment_id: int,
        amount: int,
        currency: str,
        token: str,
        capture: bool,
        idempotency_key: str,
    ) -> ChargeResult:
        if token == UNREACHABLE:
            raise ProviderUnavailable("the test provider was asked to be unreachable")
        reference = f"pi_test_{order_id}_{secrets.token_hex(6)}"
        if token in APPROVED:
            if capture:
                return ChargeResult("captured", reference, amount_captured=amount)
            return ChargeResult("authorized", reference)
        return ChargeResult(
            "failed", reference, failure_reason=DECLINED.get(token, "unknown test card")
        )

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> ChargeResult:
        return ChargeResult("captured", reference, amount_captured=amount)

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> RefundResult:
        return RefundResult("succeeded", f"re_test_{secrets.token_hex(6)}")

    async def void(self, reference: str, idempotency_key: str) -> ChargeResult:
        return ChargeResult("failed", reference, failure_reason="voided")
