"""The payment-provider port: what the payments service asks of a provider (authorise, capture,
refund, void), and what it hears back. Providers speak in integer minor units of the store
currency; they never see the database.

A provider raises `ProviderUnavailable` when it cannot be reached or answers with a server
error: the service then changes nothing and the edge answers 503 with Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

ChargeStatus = Literal["pending", "authorized", "captured", "failed"]
RefundStatus = Literal["succeeded", "pending", "failed"]


class ProviderUnavailable(Exception):
    """The provider could not be reached or failed on its side; retry later."""


class ProviderRejected(Exception):
    """The provider refused the request itself (not a card decline): a bad reference, an
    amount it will not take, an idempotency key reused with other values."""


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """The provider's view of one payment after a call.

    `reference` is the provider's id (a Stripe PaymentIntent id); `amount_captured` is what the
    provider holds as captured (0 unless `status` is "captured").
    """

    status: ChargeStatus
    reference: str
    amount_captured: int = 0
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RefundResult:
    status: RefundStatus
    reference: str
    failure_reason: str | None = None


class PaymentProvider(Protocol):
    name: str

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
        """Charge `token` for `amount`; with `capture=False` only authorise (hold) it."""
        ...

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> ChargeResult:
        """Capture `amount` (<= the authorised amount) of an authorised payment."""
        ...

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> RefundResult:
        """Give back `amount` of a captured payment."""
        ...

    async def void(self, reference: str, idempotency_key: str) -> ChargeResult:
        """Release an authorisation that will not be captured (status "failed" afterwards is
        not expected; a voided authorisation reports "failed" with reason "voided")."""
        ...
