"""Stripe, spoken over its REST API with the stdlib and Tornado's HTTP client (no SDK): the
PaymentProvider for PAYMENT_PROVIDER=stripe, and the verification of its signed webhooks.

Webhook signatures follow Stripe's scheme: header `Stripe-Signature: t=<unix>,v1=<hex>,...`,
where each v1 is HMAC-SHA256(secret, "<t>." + raw body). Several v1 entries appear while a
secret is rotated; any one matching is enough. v0 (test-mode legacy) entries are ignored.

`ProviderRejected` and `ProviderUnavailable` are the port's own classes (re-exported here), so
the payments service catches one class whichever provider raised it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
import tornado.httpclient

from server.services.payments.provider import (
    ChargeResult,
    ChargeStatus,
    ProviderRejected,
    ProviderUnavailable,
    RefundResult,
    RefundStatus,
)

__all__ = [
    "API_VERSION",
    "MalformedEvent",
    "ProviderRejected",
    "ProviderUnavailable",
    "SignatureError",
    "StripeProvider",
    "WebhookEvent",
    "parse_event",
    "sign",
    "verify_signature",
]

# Pinned so that API answers keep the shape this module reads, whatever the account default is.
API_VERSION = "2024-06-20"

_REFERENCE_RE = re.compile(r"pi_[A-Za-z0-9_]+")
# A Unix time in seconds has 10 digits until 2286; more is an attack on int(), not a time.
_MAX_TIMESTAMP_DIGITS = 12
# orders.id is a bigint: 18 decimal digits always fit, and int() never sees a huge string.
_MAX_ID_DIGITS = 18


class SignatureError(Exception):
    """A webhook delivery whose Stripe-Signature does not prove it came from Stripe, now."""


class MalformedEvent(ValueError):
    """A signed body that is not a Stripe event."""


def _hmac_hex(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The Stripe-Signature header Stripe would send for `payload` at `timestamp` (tests and
    anyone simulating Stripe deliveries)."""
    return f"t={timestamp},v1={_hmac_hex(payload, secret, timestamp)}"


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> int:
    """The signature's timestamp when `header` signs `payload` with `secret` within
    `tolerance` seconds of `now` (either way: a stale delivery may be a replay, a future one a
    forgery made ahead of time); SignatureError otherwise."""
    if not header:
        raise SignatureError("no Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, equals, value = part.strip().partition("=")
        if not equals:
            raise SignatureError("malformed Stripe-Signature header")
        if key == "t":
            if (
                timestamp is not None
                or not value.isascii()
                or not value.isdigit()
                or len(value) > _MAX_TIMESTAMP_DIGITS
            ):
                raise SignatureError("malformed timestamp in Stripe-Signature")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("no timestamp in Stripe-Signature")
    if not signatures:
        raise SignatureError("no v1 signature in Stripe-Signature")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("timestamp outside the tolerance (stale or replayed delivery)")
    wanted = _hmac_hex(payload, secret, timestamp).encode()
    # Bytes, not str: compare_digest raises TypeError on non-ASCII str, and header values may
    # carry any Latin-1 character.
    if not any(hmac.compare_digest(wanted, candidate.encode()) for candidate in signatures):
        raise SignatureError("no signature matches")
    return timestamp


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """What the gateway acts on in one Stripe event; fields the type does not carry are None."""

    id: str
    type: str
    created: int
    # The PaymentIntent the event is about (the object's id, or a charge's payment_intent).
    payment_reference: str | None = None
    amount_captured: int | None = None
    amount_capturable: int | None = None
    amount_refunded: int | None = None
    failure_reason: str | None = None
    order_id: int | None = None
    # metadata.payment_id: finds the gateway's payment when its reference was never recorded
    # (the answer to the call that created the PaymentIntent was lost).
    payment_id: int | None = None
    # A refund event: the refund's id and the status Stripe moved it to.
    refund_reference: str | None = None
    refund_status: RefundStatus | None = None


def _int_field(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedEvent(f"{name} is not an integer")
    return value


def _str_field(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"{name} is not a string")
    return value


def _dict_field(obj: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedEvent(f"{name} is not an object")
    return value


def _metadata_id(obj: dict[str, Any], name: str) -> int | None:
    """An id the gateway wrote into metadata (a decimal string); None for anything else."""
    metadata = _dict_field(obj, "metadata")
    value = metadata.get(name) if metadata is not None else None
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isdigit()
        and len(value) <= _MAX_ID_DIGITS
    ):
        return int(value)
    return None


# Events whose object is a Refund: a refund Stripe answered `pending` settles by one of them.
REFUND_EVENTS = frozenset({"charge.refund.updated", "refund.updated", "refund.failed"})


def parse_event(payload: bytes) -> WebhookEvent:
    """The fields of a Stripe event the gateway acts on; MalformedEvent for anything else.

    Unknown event types parse (their object is not looked into); the caller ignores them."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedEvent("not JSON") from None
    if not isinstance(event, dict):
        raise MalformedEvent("not an event object")
    event_id, event_type = _str_field(event, "id"), _str_field(event, "type")
    created = _int_field(event, "created")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not event_id or not event_type or created is None or not isinstance(obj, dict):
        raise MalformedEvent("an event needs id, type, created and data.object")
    if event_type.startswith("payment_intent."):
        error = _dict_field(obj, "last_payment_error")
        reason = None
        if error is not None:
            reason = _str_field(error, "message") or _str_field(error, "code")
        return WebhookEvent(
            event_id,
            event_type,
            created,
            payment_reference=_str_field(obj, "id"),
            amount_captured=_int_field(obj, "amount_received"),
            amount_capturable=_int_field(obj, "amount_capturable"),
            failure_reason=reason,
            order_id=_metadata_id(obj, "order_id"),
            payment_id=_metadata_id(obj, "payment_id"),
        )
    if event_type in REFUND_EVENTS:
        status = _str_field(obj, "status")
        return WebhookEvent(
            event_id,
            event_type,
            created,
            payment_reference=_str_field(obj, "payment_intent"),
            failure_reason=_str_field(obj, "failure_reason"),
            refund_reference=_str_field(obj, "id"),
            refund_status=_REFUND_STATUS.get(status) if status is not None else None,
        )
    if event_type.startswith("charge."):
        return WebhookEvent(
            event_id,
            event_type,
            created,
            payment_reference=_str_field(obj, "payment_intent"),
            amount_captured=_int_field(obj, "amount_captured"),
            amount_refunded=_int_field(obj, "amount_refunded"),
            order_id=_metadata_id(obj, "order_id"),
            payment_id=_metadata_id(obj, "payment_id"),
        )
    return WebhookEvent(event_id, event_type, created)


_INTENT_STATUS: dict[str, ChargeStatus] = {
    "succeeded": "captured",
    "requires_capture": "authorized",
    "processing": "pending",
    "requires_action": "pending",
    "requires_confirmation": "pending",
    "requires_payment_method": "failed",
    "canceled": "failed",
}
_REFUND_STATUS: dict[str, RefundStatus] = {
    "succeeded": "succeeded",
    "pending": "pending",
    "requires_action": "pending",
    "failed": "failed",
    "canceled": "failed",
}


def _checked_reference(reference: str) -> str:
    """`reference` when it is a PaymentIntent id, before it goes into a URL path."""
    if not _REFERENCE_RE.fullmatch(reference):
        raise ValueError(f"not a PaymentIntent id: {reference!r}")
    return reference


def _charge(intent: dict[str, Any]) -> ChargeResult:
    """A PaymentIntent as the port's ChargeResult. An unknown status is "pending" (a webhook
    settles it later); an answer without an id cannot be recorded, so it is Unavailable."""
    reference = intent.get("id")
    if not isinstance(reference, str) or not reference:
        raise ProviderUnavailable("Stripe answered a PaymentIntent without an id")
    status = _INTENT_STATUS.get(str(intent.get("status")), "pending")
    captured = 0
    if status == "captured":
        received = intent.get("amount_received")
        if not isinstance(received, int) or isinstance(received, bool):
            raise ProviderUnavailable("Stripe answered a captured PaymentIntent without amount")
        captured = received
    reason = None
    if status == "failed":
        error = intent.get("last_payment_error")
        if isinstance(error, dict):
            reason = str(error.get("message") or error.get("code") or "") or None
        reason = reason or f"payment {intent.get('status')}"
    return ChargeResult(status, reference, amount_captured=captured, failure_reason=reason)


def _error_message(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "refused")
    return "refused"


class StripeProvider:
    """PaymentIntents with automatic or manual capture, refunds and cancellations.

    Answers: 2xx is read; 402 on authorize is a declined card (a "failed" result, not an
    error); 429, 5xx, network errors, timeouts, redirects (never followed: an API that moves is
    misconfigured or hijacked) and `Stripe-Should-Retry: true` raise ProviderUnavailable; any
    other 4xx raises ProviderRejected with Stripe's message.
    """

    name = "stripe"

    def __init__(
        self, api_key: str, *, api_base: str = "https://api.stripe.com", timeout: float = 10.0
    ) -> None:
        self._api_key = api_key
        self._base = api_base.rstrip("/")
        self._timeout = timeout

    async def _post(
        self, path: str, form: dict[str, str | int], idempotency_key: str
    ) -> tuple[int, dict[str, Any]]:
        request = tornado.httpclient.HTTPRequest(
            self._base + path,
            method="POST",
            body=urlencode(form),
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Idempotency-Key": idempotency_key,
                "Content-Type": "application/x-www-form-urlencoded",
                "Stripe-Version": API_VERSION,
            },
            follow_redirects=False,
            connect_timeout=self._timeout,
            request_timeout=self._timeout,
        )
        # Looked up per call, not kept: AsyncHTTPClient is one per event loop, and a provider
        # built before the loop runs (AppContext) must use the loop it is awaited on.
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            response = await client.fetch(request, raise_error=False)
        except (OSError, tornado.httpclient.HTTPClientError) as exc:
            raise ProviderUnavailable(f"Stripe unreachable: {exc}") from None
        code = response.code
        if code == 599 or code >= 500 or code == 429:
            raise ProviderUnavailable(f"Stripe answered {code}")
        if 300 <= code < 400:
            raise ProviderUnavailable(f"Stripe answered a redirect ({code}), not followed")
        if code >= 400 and response.headers.get("Stripe-Should-Retry", "").lower() == "true":
            # Stripe's own word that the same request may succeed later (a 409 lock, say).
            raise ProviderUnavailable(f"Stripe answered {code} and asks for a retry")
        try:
            body = orjson.loads(response.body or b"{}")
        except orjson.JSONDecodeError:
            raise ProviderUnavailable("Stripe answered something that is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable("Stripe answered something that is not an object")
        return code, body

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
        code, body = await self._post(
            "/v1/payment_intents",
            {
                "amount": amount,
                "currency": currency.lower(),
                "payment_method": token,
                "payment_method_types[]": "card",
                "confirm": "true",
                "capture_method": "automatic" if capture else "manual",
                "metadata[order_id]": str(order_id),
                "metadata[payment_id]": str(payment_id),
            },
            idempotency_key,
        )
        if code == 402:  # a card error: the attempt happened and was declined
            error = body.get("error")
            intent = error.get("payment_intent") if isinstance(error, dict) else None
            reference = intent.get("id") if isinstance(intent, dict) else None
            return ChargeResult(
                "failed",
                reference if isinstance(reference, str) else "",
                failure_reason=_error_message(body),
            )
        if code >= 400:
            raise ProviderRejected(_error_message(body))
        return _charge(body)

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> ChargeResult:
        path = f"/v1/payment_intents/{_checked_reference(reference)}/capture"
        code, body = await self._post(path, {"amount_to_capture": amount}, idempotency_key)
        if code >= 400:
            raise ProviderRejected(_error_message(body))
        return _charge(body)

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> RefundResult:
        form: dict[str, str | int] = {"payment_intent": _checked_reference(reference)}
        form["amount"] = amount
        code, body = await self._post("/v1/refunds", form, idempotency_key)
        if code >= 400:
            raise ProviderRejected(_error_message(body))
        status = _REFUND_STATUS.get(str(body.get("status")), "pending")
        reason = body.get("failure_reason")
        return RefundResult(
            status,
            str(body.get("id", "")),
            (str(reason) if reason else f"refund {body.get('status')}")
            if status == "failed"
            else None,
        )

    async def void(self, reference: str, idempotency_key: str) -> ChargeResult:
        path = f"/v1/payment_intents/{_checked_reference(reference)}/cancel"
        code, body = await self._post(path, {}, idempotency_key)
        if code >= 400:
            raise ProviderRejected(_error_message(body))
        return ChargeResult("failed", str(body.get("id", reference)), failure_reason="voided")
