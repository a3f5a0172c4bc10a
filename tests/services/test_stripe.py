"""The Stripe provider against local stand-ins of Stripe's API (real HTTP servers on 127.0.0.1),
and Stripe's webhook signature scheme and event parsing against recorded payloads (no network).

Two stand-ins: `FakeStripe` (tests/stripe_support.py) keeps PaymentIntents and answers like
Stripe's test cards; `Scripted` (here) answers exactly what a test queues (any status, header or
body), for the answers Stripe gives rarely: 429, a retryable 409, a redirect, garbage.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
import tornado.httpserver
import tornado.web

from loadtests.harness import free_port
from server.services.payments import stripe
from server.services.payments.provider import ProviderRejected, ProviderUnavailable
from server.services.payments.stripe import StripeProvider, WebhookEvent
from tests.stripe_support import FIXTURES, FakeStripe

SECRET = "whsec_test_0123456789abcdef"
NOW = 1_724_323_500
VECTOR_PAYLOAD = b'{"id": "evt_1", "object": "event"}'
# HMAC-SHA256(SECRET, b"1724323500." + VECTOR_PAYLOAD), computed outside this code base:
#   printf '%s' '1724323500.{"id": "evt_1", "object": "event"}' \
#     | openssl dgst -sha256 -hmac whsec_test_0123456789abcdef
VECTOR_V1 = "76fb58a61f32788bd4c11fdb23d1249ef303ac4980001f77bd050f688a30437f"


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


# ---- a scripted stand-in ------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)  # a dict/list is sent as JSON, bytes as they are
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Scripted:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *answers: Answer) -> None:
        self.answers.extend(answers)


class _ScriptedHandler(tornado.web.RequestHandler):
    def initialize(self, script: Scripted) -> None:
        self.script = script

    def post(self, path: str) -> None:
        self.script.seen.append(
            Seen(
                self.request.method or "",
                self.request.path,
                dict(parse_qsl(self.request.body.decode(), keep_blank_values=True)),
                dict(self.request.headers.items()),
            )
        )
        answer = self.script.answers.pop(0) if self.script.answers else Answer()
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        if isinstance(answer.body, bytes):
            self.finish(answer.body)
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(orjson.dumps(answer.body))


@pytest.fixture(scope="module")
async def scripted_server() -> AsyncIterator[Scripted]:
    script = Scripted(port=free_port())
    app = tornado.web.Application([(r"(/.*)", _ScriptedHandler, {"script": script})])
    server: tornado.httpserver.HTTPServer = app.listen(script.port, address="127.0.0.1")
    yield script
    server.stop()


@pytest.fixture
def script(scripted_server: Scripted) -> Iterator[Scripted]:
    scripted_server.seen.clear()
    scripted_server.answers.clear()
    yield scripted_server
    assert not scripted_server.answers, "a queued answer was never asked for"


@pytest.fixture
def scripted(script: Scripted) -> StripeProvider:
    return StripeProvider("sk_test_scripted", api_base=script.base_url, timeout=2.0)


def intent(status: str, **fields: Any) -> dict[str, Any]:
    """A PaymentIntent as Stripe answers it (2024-06-20), in `status`."""
    body: dict[str, Any] = {
        "id": "pi_3PqVx2LkdIwHu7ix0v8GkTqZ",
        "object": "payment_intent",
        "amount": 2000,
        "amount_capturable": 0,
        "amount_received": 0,
        "currency": "usd",
        "last_payment_error": None,
        "metadata": {"order_id": "42"},
        "status": status,
    }
    body.update(fields)
    return body


async def authorize(provider: StripeProvider, *, capture: bool = True) -> Any:
    return await provider.authorize(
        order_id=42,
        payment_id=142,
        amount=2000,
        currency="EUR",
        token="pm_card_visa",
        capture=capture,
        idempotency_key="payment-42",
    )


# ---- signatures -------------------------------------------------------------------------------


def test_a_signature_made_as_stripe_documents_it_is_accepted() -> None:
    # Computed here independently of sign(), and pinned to a vector made with openssl.
    expected = hmac.new(
        SECRET.encode(), b"1724323500." + VECTOR_PAYLOAD, hashlib.sha256
    ).hexdigest()
    assert expected == VECTOR_V1
    assert stripe.sign(VECTOR_PAYLOAD, SECRET, NOW) == f"t={NOW},v1={VECTOR_V1}"
    header = f"t={NOW},v1={VECTOR_V1},v0=ignored"
    assert stripe.verify_signature(VECTOR_PAYLOAD, header, SECRET, now=NOW + 10) == NOW
    # Stripe puts no spaces in the header, but a proxy may; and v0 may come first.
    spaced = f"t={NOW}, v0={'0' * 64}, v1={VECTOR_V1}"
    assert stripe.verify_signature(VECTOR_PAYLOAD, spaced, SECRET, now=NOW) == NOW


def test_one_matching_v1_among_several_is_enough() -> None:
    # While a secret rotates, Stripe signs with the old and the new one.
    payload = b"{}"
    good = stripe.sign(payload, SECRET, NOW).split("v1=")[1]
    header = f"t={NOW},v1={'0' * 64},v1={good}"
    assert stripe.verify_signature(payload, header, SECRET, now=NOW) == NOW
    header = f"t={NOW},v1={good},v1={'f' * 64}"
    assert stripe.verify_signature(payload, header, SECRET, now=NOW) == NOW


def test_the_tolerance_is_inclusive_both_ways_and_now_defaults_to_the_clock() -> None:
    payload = b"{}"
    for signed_at in (NOW - 300, NOW + 300):
        header = stripe.sign(payload, SECRET, signed_at)
        assert stripe.verify_signature(payload, header, SECRET, now=NOW) == signed_at
    header = stripe.sign(payload, SECRET, NOW - 30)
    assert stripe.verify_signature(payload, header, SECRET, tolerance=60, now=NOW) == NOW - 30
    with pytest.raises(stripe.SignatureError):
        stripe.verify_signature(payload, header, SECRET, tolerance=10, now=NOW)
    current = int(time.time())
    header = stripe.sign(payload, SECRET, current)
    assert stripe.verify_signature(payload, header, SECRET) == current


@pytest.mark.parametrize(
    "header, payload, now",
    [
        (None, b"{}", NOW),  # no header
        ("", b"{}", NOW),
        ("garbage", b"{}", NOW),
        ("t=abc,v1=..", b"{}", NOW),
        ("t=abc,v1=00", b"{}", NOW),
        (f"t={NOW},,v1={'0' * 64}", b"{}", NOW),  # an empty element
        (f"t=-{NOW},v1={'0' * 64}", b"{}", NOW),
        ("t=" + "9" * 5000 + ",v1=00", b"{}", NOW),  # would make int() choke
        (f"t={NOW},t={NOW + 1},v1={'0' * 64}", b"{}", NOW),  # two timestamps
        (f"t={NOW}", b"{}", NOW),  # no v1
        (f"t={NOW},v0={'0' * 64}", b"{}", NOW),  # only the legacy scheme
        (f"t={NOW},v0={VECTOR_V1}", VECTOR_PAYLOAD, NOW),  # right digest, legacy scheme
        (f"t={NOW},v2={VECTOR_V1}", VECTOR_PAYLOAD, NOW),  # right digest, unknown scheme
        ("v1=" + "0" * 64, b"{}", NOW),  # no timestamp
        (f"t={NOW},v1=", b"{}", NOW),  # an empty signature
        (f"t={NOW},v1=\u00e9\u00e9", b"{}", NOW),  # non-ASCII (Latin-1 header bytes)
        (f"t={NOW},v1={VECTOR_V1.upper()}", VECTOR_PAYLOAD, NOW),  # Stripe sends lowercase
        (f"t={NOW},v1={VECTOR_V1}", VECTOR_PAYLOAD + b" ", NOW),  # one byte more
        (stripe.sign(b"{}", SECRET, NOW), b'{"tampered": 1}', NOW),
        (stripe.sign(b"{}", "whsec_other", NOW), b"{}", NOW),  # another secret
        (stripe.sign(b"{}", SECRET, NOW - 301), b"{}", NOW),  # too old
        (stripe.sign(b"{}", SECRET, NOW + 301), b"{}", NOW),  # from the future
        # The timestamp is signed: moving it to pass the tolerance breaks the signature.
        (stripe.sign(b"{}", SECRET, NOW - 3600).replace(str(NOW - 3600), str(NOW)), b"{}", NOW),
    ],
)
def test_forged_stale_or_malformed_signatures_are_refused(
    header: str | None, payload: bytes, now: int
) -> None:
    with pytest.raises(stripe.SignatureError) as refused:
        stripe.verify_signature(payload, header, SECRET, tolerance=300, now=now)
    assert str(refused.value)  # a reason the webhook's 400 can carry


# ---- events -----------------------------------------------------------------------------------

EXPECTED_EVENTS: dict[str, WebhookEvent] = {
    "payment_intent.succeeded": WebhookEvent(
        id="evt_3PqVx2LkdIwHu7ix0n3Y1aBc",
        type="payment_intent.succeeded",
        created=1724323456,
        payment_reference="pi_3PqVx2LkdIwHu7ix0v8GkTqZ",
        amount_captured=2000,
        amount_capturable=0,
        order_id=42,
    ),
    "payment_intent.amount_capturable_updated": WebhookEvent(
        id="evt_3PqW1eLkdIwHu7ix1b2Kc9Qd",
        type="payment_intent.amount_capturable_updated",
        created=1724323530,
        payment_reference="pi_3PqW1eLkdIwHu7ix1Xh8mRtV",
        amount_captured=0,
        amount_capturable=4500,
        order_id=43,
    ),
    "payment_intent.payment_failed": WebhookEvent(
        id="evt_3PqW5ZLkdIwHu7ix0Gm4Rf7s",
        type="payment_intent.payment_failed",
        created=1724323777,
        payment_reference="pi_3PqW5ZLkdIwHu7ix0Lr1Nx2D",
        amount_captured=0,
        amount_capturable=0,
        failure_reason="Your card has insufficient funds.",
        order_id=44,
    ),
    "charge.refunded": WebhookEvent(
        id="evt_3PqWA1LkdIwHu7ix1eXq2Tm9",
        type="charge.refunded",
        created=1724324001,
        payment_reference="pi_3PqVx2LkdIwHu7ix0v8GkTqZ",
        amount_captured=2000,
        amount_refunded=2000,
        order_id=42,
    ),
    "charge.refund.updated": WebhookEvent(
        id="evt_3PqWF7LkdIwHu7ix0Zt5Vb3n",
        type="charge.refund.updated",
        created=1724327600,
        payment_reference="pi_3PqVx2LkdIwHu7ix0v8GkTqZ",
        failure_reason="expired_or_canceled_card",
        refund_reference="re_3PqWA1LkdIwHu7ix1Kd8Yp2w",
        refund_status="failed",
    ),
    "customer.created": WebhookEvent(
        id="evt_1PqWC3LkdIwHu7ixP0oG4n8z", type="customer.created", created=1724324100
    ),
}


def test_every_fixture_has_its_expectation() -> None:
    assert {path.stem for path in FIXTURES.glob("*.json")} == set(EXPECTED_EVENTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_EVENTS))
def test_recorded_events_parse_into_what_the_gateway_acts_on(name: str) -> None:
    path: Path = FIXTURES / f"{name}.json"
    assert stripe.parse_event(path.read_bytes()) == EXPECTED_EVENTS[name]


def test_fixture_files_are_real_json_events() -> None:
    for path in FIXTURES.glob("*.json"):
        event = orjson.loads(path.read_bytes())
        assert event["object"] == "event" and event["id"].startswith("evt_")
        assert event["type"] == path.stem and event["api_version"] == stripe.API_VERSION
        assert event["livemode"] is False and isinstance(event["pending_webhooks"], int)
        assert set(event["request"]) == {"id", "idempotency_key"}
        obj = event["data"]["object"]
        if obj["object"] == "payment_intent":
            assert obj["id"].startswith("pi_") and obj["currency"] == obj["currency"].lower()
            for name in ("amount", "amount_received", "amount_capturable"):
                assert isinstance(obj[name], int)
        if obj["object"] == "charge":
            assert obj["payment_intent"].startswith("pi_")


def test_a_failure_without_a_message_falls_back_to_its_code() -> None:
    event = orjson.loads((FIXTURES / "payment_intent.payment_failed.json").read_bytes())
    del event["data"]["object"]["last_payment_error"]["message"]
    assert stripe.parse_event(orjson.dumps(event)).failure_reason == "card_declined"


@pytest.mark.parametrize(
    "order_id", ["", "abc", "-1", "4.2", "\u0664\u0662", "9" * 19, "9" * 5000, 42, None]
)
def test_an_order_id_that_is_not_a_short_decimal_string_is_none(order_id: Any) -> None:
    event = orjson.loads((FIXTURES / "payment_intent.succeeded.json").read_bytes())
    event["data"]["object"]["metadata"] = {"order_id": order_id, "payment_id": order_id}
    parsed = stripe.parse_event(orjson.dumps(event))
    assert parsed.order_id is None and parsed.payment_id is None


def test_the_payment_id_in_metadata_is_parsed() -> None:
    event = orjson.loads((FIXTURES / "payment_intent.succeeded.json").read_bytes())
    event["data"]["object"]["metadata"] = {"order_id": "42", "payment_id": "7"}
    parsed = stripe.parse_event(orjson.dumps(event))
    assert (parsed.order_id, parsed.payment_id) == (42, 7)


def test_an_unknown_event_type_is_not_looked_into() -> None:
    payload = (
        b'{"id": "evt_x", "type": "invoice.paid", "created": 1,'
        b' "data": {"object": {"amount_received": "lots", "metadata": "x"}}}'
    )
    assert stripe.parse_event(payload) == WebhookEvent("evt_x", "invoice.paid", 1)


def _event(obj: str, kind: str = "payment_intent.succeeded") -> bytes:
    return (
        f'{{"id": "evt_1", "type": "{kind}", "created": 1, "data": {{"object": {obj}}}}}'
    ).encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",  # not UTF-8
        b"[]",
        b'"evt_1"',
        b"null",
        b'{"type": "x", "created": 1, "data": {"object": {}}}',  # no id
        b'{"id": 1, "type": "x", "created": 1, "data": {"object": {}}}',
        b'{"id": "", "type": "x", "created": 1, "data": {"object": {}}}',
        b'{"id": "evt", "created": 1, "data": {"object": {}}}',  # no type
        b'{"id": "evt", "type": ["x"], "created": 1, "data": {"object": {}}}',
        b'{"id": "evt", "type": "x", "data": {"object": {}}}',  # no created
        b'{"id": "evt", "type": "x", "created": "1", "data": {"object": {}}}',
        b'{"id": "evt", "type": "x", "created": 1.5, "data": {"object": {}}}',
        b'{"id": "evt", "type": "x", "created": true, "data": {"object": {}}}',
        b'{"id": "evt", "type": "x", "created": 1}',  # no data
        b'{"id": "evt", "type": "x", "created": 1, "data": {}}',
        b'{"id": "evt", "type": "x", "created": 1, "data": []}',
        b'{"id": "evt", "type": "x", "created": 1, "data": {"object": []}}',
        _event('{"id": "pi_1", "amount_received": "2000"}'),
        _event('{"id": "pi_1", "amount_received": 20.5}'),
        _event('{"id": "pi_1", "amount_received": true}'),
        _event('{"id": "pi_1", "amount_capturable": "4500"}'),
        _event('{"id": 7, "amount_received": 2000}'),
        _event('{"id": "pi_1", "last_payment_error": "declined"}', "payment_intent.payment_failed"),
        _event('{"id": "pi_1", "last_payment_error": {"message": 5}}', "payment_intent.failed"),
        _event('{"id": "pi_1", "metadata": ["order_id"]}'),
        _event('{"payment_intent": "pi_1", "amount_refunded": "2000"}', "charge.refunded"),
        _event('{"payment_intent": ["pi_1"], "amount_refunded": 2000}', "charge.refunded"),
        _event(
            '{"payment_intent": "pi_1", "amount_captured": null, "amount_refunded": {}}',
            "charge.refunded",
        ),
    ],
)
def test_malformed_events_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError) as refused:
        stripe.parse_event(payload)
    assert isinstance(refused.value, stripe.MalformedEvent)


# ---- the provider against FakeStripe ----------------------------------------------------------


async def test_a_charge_is_a_confirmed_payment_intent(
    provider: StripeProvider, fake_stripe: FakeStripe
) -> None:
    result = await provider.authorize(
        order_id=7,
        payment_id=107,
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
        "metadata[payment_id]": "107",
    }
    assert sent.headers["Authorization"] == "Bearer sk_test_key"
    assert sent.headers["Idempotency-Key"] == "payment-1"
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.headers["Stripe-Version"] == stripe.API_VERSION


async def test_manual_capture_authorises_then_captures(
    provider: StripeProvider, fake_stripe: FakeStripe
) -> None:
    held = await provider.authorize(
        order_id=8,
        payment_id=108,
        amount=1000,
        currency="USD",
        token="tok_visa",
        capture=False,
        idempotency_key="payment-2",
    )
    assert held.status == "authorized" and held.reference.startswith("pi_")
    assert held.amount_captured == 0
    assert fake_stripe.requests[-1].form["capture_method"] == "manual"
    captured = await provider.capture(held.reference, 600, "capture-2")
    assert captured.status == "captured" and captured.amount_captured == 600
    assert fake_stripe.requests[-1].path == f"/v1/payment_intents/{held.reference}/capture"
    assert fake_stripe.requests[-1].form == {"amount_to_capture": "600"}
    assert fake_stripe.requests[-1].headers["Idempotency-Key"] == "capture-2"


async def test_a_card_error_is_a_failed_payment(provider: StripeProvider) -> None:
    result = await provider.authorize(
        order_id=9,
        payment_id=109,
        amount=1000,
        currency="USD",
        token="tok_chargeDeclined",
        capture=True,
        idempotency_key="payment-3",
    )
    assert result.status == "failed" and result.failure_reason == "Your card was declined."
    assert result.reference.startswith("pi_") and result.amount_captured == 0


async def test_a_payment_still_processing_is_pending(provider: StripeProvider) -> None:
    result = await provider.authorize(
        order_id=12,
        payment_id=112,
        amount=1000,
        currency="USD",
        token="tok_processing",
        capture=True,
        idempotency_key="payment-6",
    )
    assert result.status == "pending" and result.reference.startswith("pi_")


async def test_a_refund_and_a_void(provider: StripeProvider, fake_stripe: FakeStripe) -> None:
    paid = await provider.authorize(
        order_id=10,
        payment_id=110,
        amount=900,
        currency="USD",
        token="tok_visa",
        capture=True,
        idempotency_key="payment-4",
    )
    refunded = await provider.refund(paid.reference, 400, "refund-1")
    assert refunded.status == "succeeded" and refunded.reference.startswith("re_")
    assert refunded.failure_reason is None
    assert fake_stripe.requests[-1].path == "/v1/refunds"
    assert fake_stripe.requests[-1].form == {"payment_intent": paid.reference, "amount": "400"}
    assert fake_stripe.requests[-1].headers["Idempotency-Key"] == "refund-1"
    held = await provider.authorize(
        order_id=11,
        payment_id=111,
        amount=900,
        currency="USD",
        token="tok_visa",
        capture=False,
        idempotency_key="payment-5",
    )
    voided = await provider.void(held.reference, "void-5")
    assert (voided.status, voided.reference, voided.failure_reason) == (
        "failed",
        held.reference,
        "voided",
    )
    assert fake_stripe.requests[-1].path == f"/v1/payment_intents/{held.reference}/cancel"
    assert fake_stripe.requests[-1].form == {}
    assert fake_stripe.requests[-1].headers["Idempotency-Key"] == "void-5"


async def test_a_server_error_or_no_server_is_unavailable(fake_stripe: FakeStripe) -> None:
    provider = StripeProvider("sk", api_base=fake_stripe.base_url, timeout=2.0)
    with pytest.raises(ProviderUnavailable):
        await provider.authorize(
            order_id=1,
            payment_id=101,
            amount=1,
            currency="USD",
            token="tok_explode",
            capture=True,
            idempotency_key="k",
        )
    # A port where nothing listens: the connection is refused.
    nowhere = StripeProvider("sk", api_base=f"http://127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(ProviderUnavailable):
        await nowhere.capture("pi_123", 1, "k")


async def test_a_request_error_is_rejected(provider: StripeProvider) -> None:
    with pytest.raises(ProviderRejected, match="No such"):
        await provider.capture("pi_unknown", 1, "capture-x")


async def test_a_bad_reference_never_reaches_the_url(
    provider: StripeProvider, fake_stripe: FakeStripe
) -> None:
    before = len(fake_stripe.requests)
    for reference in ("../v1/customers", "pi_1/../../x", "pi_1?x=1", "pi_", "pi_1\n", "ch_123", ""):
        with pytest.raises(ValueError):
            await provider.capture(reference, 1, "k")
        with pytest.raises(ValueError):
            await provider.refund(reference, 1, "k")
        with pytest.raises(ValueError):
            await provider.void(reference, "k")
    assert len(fake_stripe.requests) == before


# ---- the provider against scripted answers ----------------------------------------------------


@pytest.mark.parametrize(
    "answer, expected",
    [
        (intent("succeeded", amount_received=2000), ("captured", 2000, None)),
        (intent("requires_capture", amount_capturable=2000), ("authorized", 0, None)),
        (intent("processing"), ("pending", 0, None)),
        (intent("requires_action"), ("pending", 0, None)),
        (intent("requires_confirmation"), ("pending", 0, None)),
        (intent("some_future_status"), ("pending", 0, None)),
        (
            intent(
                "requires_payment_method",
                last_payment_error={"code": "card_declined", "message": "Your card was declined."},
            ),
            ("failed", 0, "Your card was declined."),
        ),
        (intent("canceled"), ("failed", 0, "payment canceled")),
    ],
)
async def test_payment_intent_statuses_map_onto_the_port(
    scripted: StripeProvider,
    script: Scripted,
    answer: dict[str, Any],
    expected: tuple[str, int, str | None],
) -> None:
    script.queue(Answer(200, answer))
    result = await authorize(scripted)
    assert (result.status, result.amount_captured, result.failure_reason) == expected
    assert result.reference == "pi_3PqVx2LkdIwHu7ix0v8GkTqZ"
    (sent,) = script.seen
    assert (sent.method, sent.path) == ("POST", "/v1/payment_intents")
    assert sent.form["currency"] == "eur" and sent.form["metadata[order_id]"] == "42"
    assert sent.headers["Authorization"] == "Bearer sk_test_scripted"
    assert sent.headers["Idempotency-Key"] == "payment-42"


async def test_a_decline_without_a_payment_intent_has_no_reference(
    scripted: StripeProvider, script: Scripted
) -> None:
    error = {"type": "card_error", "code": "expired_card", "message": "Your card has expired."}
    script.queue(Answer(402, {"error": error}))
    result = await authorize(scripted)
    assert (result.status, result.reference, result.failure_reason) == (
        "failed",
        "",
        "Your card has expired.",
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
async def test_other_client_errors_are_rejected_with_stripes_message(
    scripted: StripeProvider, script: Scripted, status: int
) -> None:
    error = {"type": "invalid_request_error", "message": f"refused with {status}"}
    script.queue(Answer(status, {"error": error}))
    with pytest.raises(ProviderRejected, match=f"refused with {status}"):
        await authorize(scripted)


async def test_a_client_error_stripe_says_to_retry_is_unavailable(
    scripted: StripeProvider, script: Scripted
) -> None:
    # Stripe's answer to a request whose idempotency key is still in flight elsewhere.
    error = {"type": "idempotency_error", "code": "idempotency_key_in_use", "message": "in use"}
    script.queue(Answer(409, {"error": error}, {"Stripe-Should-Retry": "true"}))
    with pytest.raises(ProviderUnavailable):
        await scripted.capture("pi_123", 100, "capture-1")


@pytest.mark.parametrize(
    "answer",
    [
        Answer(429, {"error": {"type": "rate_limit_error", "message": "slow down"}}),
        Answer(500, {"error": {"type": "api_error", "message": "boom"}}),
        Answer(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}),
        Answer(503, b""),
        Answer(200, b"<html>a captive portal</html>", {"Content-Type": "text/html"}),
        Answer(200, ["not", "an", "object"]),
        Answer(200, {"object": "payment_intent", "status": "succeeded"}),  # no id
        Answer(200, intent("succeeded", amount_received="2000")),
        Answer(400, b"not json"),
    ],
)
async def test_answers_that_say_nothing_reliable_are_unavailable(
    scripted: StripeProvider, script: Scripted, answer: Answer
) -> None:
    script.queue(answer)
    with pytest.raises(ProviderUnavailable):
        await authorize(scripted)


async def test_a_redirect_is_not_followed(scripted: StripeProvider, script: Scripted) -> None:
    """Decision: a redirect is ProviderUnavailable (Stripe's API never redirects, so the base
    URL is misconfigured or hijacked; the secret key must not follow it anywhere)."""
    landing = f"{script.base_url}/v1/landing"
    script.queue(Answer(302, b"", {"Location": landing}), Answer(200, intent("succeeded")))
    with pytest.raises(ProviderUnavailable, match="redirect"):
        await authorize(scripted)
    assert [seen.path for seen in script.seen] == ["/v1/payment_intents"]
    script.answers.clear()  # the landing answer is never asked for, as it should be


async def test_a_server_that_never_answers_is_unavailable_after_the_timeout() -> None:
    """A server that accepts the connection, reads the request and stays silent."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", free_port())
    port = server.sockets[0].getsockname()[1]
    provider = StripeProvider("sk", api_base=f"http://127.0.0.1:{port}", timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable):
            await provider.capture("pi_123", 1, "capture-1")
        assert 0.4 < time.monotonic() - started < 3
    finally:
        server.close()
        await server.wait_closed()


async def test_capture_sends_the_amount_to_capture(
    scripted: StripeProvider, script: Scripted
) -> None:
    script.queue(Answer(200, intent("succeeded", amount_received=1500)))
    result = await scripted.capture("pi_3PqVx2LkdIwHu7ix0v8GkTqZ", 1500, "capture-9")
    assert (result.status, result.amount_captured) == ("captured", 1500)
    (sent,) = script.seen
    assert sent.path == "/v1/payment_intents/pi_3PqVx2LkdIwHu7ix0v8GkTqZ/capture"
    assert sent.form == {"amount_to_capture": "1500"}
    assert sent.headers["Idempotency-Key"] == "capture-9"


@pytest.mark.parametrize(
    "answer, expected",
    [
        ({"status": "succeeded"}, ("succeeded", None)),
        ({"status": "pending"}, ("pending", None)),
        ({"status": "requires_action"}, ("pending", None)),
        (
            {"status": "failed", "failure_reason": "expired_or_canceled_card"},
            ("failed", "expired_or_canceled_card"),
        ),
        ({"status": "canceled"}, ("failed", "refund canceled")),
    ],
)
async def test_refund_statuses_map_onto_the_port(
    scripted: StripeProvider,
    script: Scripted,
    answer: dict[str, Any],
    expected: tuple[str, str | None],
) -> None:
    script.queue(Answer(200, {"id": "re_3PqWA1LkdIwHu7ix1", "object": "refund", **answer}))
    result = await scripted.refund("pi_3PqVx2LkdIwHu7ix0v8GkTqZ", 700, "refund-3")
    assert (result.status, result.failure_reason) == expected
    assert result.reference == "re_3PqWA1LkdIwHu7ix1"
    (sent,) = script.seen
    assert sent.path == "/v1/refunds"
    assert sent.form == {"payment_intent": "pi_3PqVx2LkdIwHu7ix0v8GkTqZ", "amount": "700"}
    assert sent.headers["Idempotency-Key"] == "refund-3"


async def test_a_refund_stripe_refuses_is_rejected(
    scripted: StripeProvider, script: Scripted
) -> None:
    error = {"type": "invalid_request_error", "code": "charge_already_refunded"}
    script.queue(Answer(400, {"error": error}))
    with pytest.raises(ProviderRejected, match="charge_already_refunded"):
        await scripted.refund("pi_123", 700, "refund-4")


async def test_void_cancels_the_payment_intent(scripted: StripeProvider, script: Scripted) -> None:
    script.queue(Answer(200, intent("canceled")))
    result = await scripted.void("pi_3PqVx2LkdIwHu7ix0v8GkTqZ", "void-3")
    assert (result.status, result.failure_reason) == ("failed", "voided")
    (sent,) = script.seen
    assert sent.path == "/v1/payment_intents/pi_3PqVx2LkdIwHu7ix0v8GkTqZ/cancel"
    assert sent.form == {} and sent.headers["Idempotency-Key"] == "void-3"
    script.queue(Answer(400, {"error": {"message": "You cannot cancel this PaymentIntent"}}))
    with pytest.raises(ProviderRejected, match="cannot cancel"):
        await scripted.void("pi_3PqVx2LkdIwHu7ix0v8GkTqZ", "void-3")
