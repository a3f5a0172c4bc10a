"""Calling the store's payment provider: which one, and its failures as domain errors."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from server.context import AppContext
from server.domain.errors import Conflict, Unavailable
from server.services.payments.provider import (
    PaymentProvider,
    ProviderRejected,
    ProviderUnavailable,
)

T = TypeVar("T")


async def calling_provider(call: Awaitable[T]) -> T:
    """A provider call, its failures as domain errors: unreachable → 503 with Retry-After
    (the payment stays as it was; the same request retries it safely), refused → 409."""
    try:
        return await call
    except ProviderUnavailable as exc:
        raise Unavailable(
            f"the payment provider is unreachable ({exc}); retry", retry_after=5
        ) from None
    except ProviderRejected as exc:
        raise Conflict(f"the payment provider refused: {exc}") from None


def provider_of(ctx: AppContext) -> PaymentProvider:
    if ctx.payments is None:
        raise Conflict("this store takes no payments through the gateway (PAYMENT_PROVIDER=none)")
    return ctx.payments
