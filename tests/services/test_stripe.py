"""The Stripe provider against a local stand-in of Stripe's API, and Stripe's webhook
signature scheme and event parsing against recorded payloads (no network)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator

import orjson
import pytest

from server.services.payments import stripe
from server.services.payments.provider import ProviderRejected, ProviderUnavailable
from server.services.payments.stripe import StripeProvider
from tests.stripe_support import FIXTURES, FakeStripe

SECRET = "whsec_test_0123456789abcdef"
NOW = 1_724_323_500


@pytest.fixture(scope="module")
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    # Started from the test loop, which serves it while the tests await the provider.
    server = FakeStripe()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def provider(fake_stripe: FakeStripe) -> StripeProvider:
    return StripeProvider("sk_test_key", api_base=fake_stripe.base_url, timeout=2.0)


# ---- signatures -------------------------------------------------------------------------------


def test_a_signature_made_as_stripe_documents_it_is_accepted() -> None:
    payload = b'{"id": "evt_1", "object": "event"}'
    # Computed here independently of sign(): HMAC-SHA256 over "<t>.<payload>".
    expected = hmac.new(SECRET.encode(), b"1724323500." + payload, hashlib.sha256).hexdigest()
    assert stripe.sign(payload, SECRET, NOW) == f"t={NOW},v1={expected}"
    header = f"t={NOW},v1={expected},v0=ignored"
    assert stripe.verify_signature(payload, header, SECRET, now=NOW + 10) == NOW


def test_one_matching_v1_among_several_is_enough() -> None:
    payload = b"{}"
    good = stripe.sign(payload, SECRET, NOW).split("v1=")[1]
    header = f"t={NOW},v1={'0' * 64},v1={good}"
    assert stripe.verify_signature(payload, header, SECRET, now=NOW) == NOW


@pytest.mark.parametrize(
    "header, payload, now",
    [
        (None, b"{}", NOW),  # no header
        ("garbage", b"{}", NOW),
        ("t=abc,v1=00", b"{}", NOW),
        (f"t={NOW}", b"{}", NOW),  # no v1
        (f"t={NOW},v0={'0' * 64}", b"{}", NOW),  # only the legacy scheme
        ("v1=" + "0" * 64, b"{}", NOW),  # no timestamp
        (stripe.sign(b"{}", SECRET, NOW), b'{"tampered": 1}', NOW),
        (stripe.sign(b"{}", "whsec_other", NOW), b"{}", NOW),  # another secret
        (stripe.sign(b"{}", SECRET, NOW - 301), b"{}", NOW),  # too old
        (stripe.sign(b"{}", SECRET, NOW + 301), b"{}", NOW),  # from the future
    ],
)
def test_forged_stale_or_malformed_signatures_are_refused(
    header: str | None, payload: bytes, now: int
) -> None:
    with pytest.raises(stripe.SignatureError):
        stripe.verify_signature(payload, header, SECRET, tolerance=300, now=now)


# ---- events -----------------------------------------------------------------------------------


def test_recorded_events_parse_into_what_the_gateway_acts_on() -> None:
    def parsed(name: str) -> stripe.WebhookEvent:
        return stripe.parse_event((FIXTURES / f"{name}.json").read_bytes())

    succeeded = parsed("payment_intent.succeeded")
    assert (succeeded.type, succeeded.payment_reference, succeeded.amount_captured) == (
        "payment_intent.succeeded",
        "pi_3PqVx2LkdIwHu7ix0v8GkTqZ",
        2000,
    )
    assert succeeded.order_id == 42
    authorised = parsed("payment_intent.amount_capturable_updated")
    assert authorised.amount_capturable == 4500
    failed = parsed("payment_intent.payment_failed")
    assert failed.failure_reason == "Your card has insufficient funds."
    refunded = parsed("charge.refunded")
    assert (refunded.payment_reference, refunded.amount_refunded) == (
        "pi_3PqVx2LkdIwHu7ix0v8GkTqZ",
        2000,
    )
    other = parsed("customer.created")
    assert other.type == "customer.created" and other.payment_reference is None


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"type": "x", "created": 1, "data": {"object": {}}}',  # no id
        b'{"id": "evt", "type": "x", "created": "1", "data": {"object": {}}}',
        b'{"id": "evt", "type": "x", "created": 1, "data": {}}',
        b'{"id": "evt", "type": "payment_intent.succeeded", "created": 1,'
        b' "data": {"object": {"id": "pi_1", "amount_received": "2000"}}}',
    ],
)
def test_malformed_events_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        stripe.parse_event(payload)


# ---- the provider -------------------------------------------------------------------------


async def test_a_charge_is_a_confirmed_payment_intent(
    provider: StripeProvider, fake_stripe: FakeStripe
) -> None:
    result = await provider.authorize(
        order_id=7,
        amount=2599,
        currency="USD",
        token="tok_visa",
        capture=True,
        idempotency_key="payment-1",
    )
    assert result.status == "captured" and result.amount_captured == 2599
    sent = fake_stripe.requests[-1]
    assert sent.path == "/v1/payment_intents"
    assert sent.form == {
        "amount": "2599",
        "currency": "usd",
        "payment_method": "tok_visa",
        "payment_method_types[]": "card",
        "confirm": "true",
        "capture_method": "automatic",
        "metadata[order_id]": "7",
    }
    assert sent.headers["Authorization"] == "Bearer sk_test_key"
    assert sent.headers["Idempotency-Key"] == "payment-1"


async def test_manual_capture_authorises_then_captures(
    provider: StripeProvider, fake_stripe: FakeStripe
) -> None:
    held = await provider.authorize(
        order_id=8,
        amount=1000,
        currency="USD",
        token="tok_visa",
        capture=False,
        idempotency_key="payment-2",
    )
    assert held.status == "authorized" and held.reference.startswith("pi_")
    captured = await provider.capture(held.reference, 600, "capture-2")
    assert captured.status == "captured" and captured.amount_captured == 600
    assert fake_stripe.requests[-1].path == f"/v1/payment_intents/{held.reference}/capture"
    assert fake_stripe.requests[-1].form == {"amount_to_capture": "600"}


async def test_a_card_error_is_a_failed_payment(provider: StripeProvider) -> None:
    result = await provider.authorize(
        order_id=9,
        amount=1000,
        currency="USD",
        token="tok_chargeDeclined",
        capture=True,
        idempotency_key="payment-3",
    )
    assert result.status == "failed" and result.failure_reason == "Your card was declined."
    assert result.reference.startswith("pi_")


async def test_a_refund_and_a_void(provider: StripeProvider, fake_stripe: FakeStripe) -> None:
    paid = await provider.authorize(
        order_id=10,
        amount=900,
        currency="USD",
        token="tok_visa",
        capture=True,
        idempotency_key="payment-4",
    )
    refunded = await provider.refund(paid.reference, 400, "refund-1")
    assert refunded.status == "succeeded" and refunded.reference.startswith("re_")
    assert fake_stripe.requests[-1].form == {"payment_intent": paid.reference, "amount": "400"}
    assert fake_stripe.requests[-1].headers["Idempotency-Key"] == "refund-1"
    held = await provider.authorize(
        order_id=11,
        amount=900,
        currency="USD",
        token="tok_visa",
        capture=False,
        idempotency_key="payment-5",
    )
    voided = await provider.void(held.reference, "void-5")
    assert voided.failure_reason == "voided"
    assert fake_stripe.requests[-1].path == f"/v1/payment_intents/{held.reference}/cancel"


async def test_server_errors_timeouts_and_redirects_are_unavailable(
    fake_stripe: FakeStripe,
) -> None:
    provider = StripeProvider("sk", api_base=fake_stripe.base_url, timeout=2.0)
    with pytest.raises(ProviderUnavailable):
        await provider.authorize(
            order_id=1,
            amount=1,
            currency="USD",
            token="tok_explode",
            capture=True,
            idempotency_key="k",
        )
    moved = StripeProvider("sk", api_base=f"{fake_stripe.base_url}/moved", timeout=2.0)
    before = len(fake_stripe.requests)
    with pytest.raises(ProviderUnavailable):
        await moved.authorize(
            order_id=1,
            amount=1,
            currency="USD",
            token="tok_visa",
            capture=True,
            idempotency_key="k",
        )
    assert len(fake_stripe.requests) == before  # the redirect was not followed
    # A port where nothing listens: the connection is refused.
    nowhere = StripeProvider("sk", api_base="http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(ProviderUnavailable):
        await nowhere.capture("pi_123", 1, "k")


async def test_a_request_error_is_rejected(provider: StripeProvider) -> None:
    with pytest.raises(ProviderRejected):
        await provider.capture("pi_unknown", 1, "capture-x")


async def test_a_bad_reference_never_reaches_the_url(
    provider: StripeProvider, fake_stripe: FakeStripe
) -> None:
    before = len(fake_stripe.requests)
    for reference in ("../v1/customers", "pi_1/../../x", "ch_123", ""):
        with pytest.raises(ValueError):
            await provider.capture(reference, 1, "k")
    assert len(fake_stripe.requests) == before


def test_fixture_files_are_real_json_events() -> None:
    for path in FIXTURES.glob("*.json"):
        event = orjson.loads(path.read_bytes())
        assert event["object"] == "event" and event["id"].startswith("evt_")
