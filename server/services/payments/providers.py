"""Which payment provider this process uses (PAYMENT_PROVIDER), built once for the AppContext."""

from __future__ import annotations

from server.config import Settings
from server.services.payments.provider import PaymentProvider
from server.services.payments.stripe import StripeProvider
from server.services.payments.test_provider import TestProvider


def build_provider(settings: Settings) -> PaymentProvider | None:
    """None for PAYMENT_PROVIDER=none: payment routes answer 409; staff mark orders paid."""
    if settings.payment_provider == "test":
        return TestProvider()
    if settings.payment_provider == "stripe":
        assert settings.stripe_api_key is not None  # config refuses stripe without it
        return StripeProvider(settings.stripe_api_key, api_base=settings.stripe_api_base)
    return None
