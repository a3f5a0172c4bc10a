"""Stripe, spoken over its REST API with the stdlib and Tornado's HTTP client (no SDK): the
PaymentProvider for PAYMENT_PROVIDER=stripe, and the verification of its signed webhooks.

Webhook signatures follow Stripe's scheme: header `Stripe-Signature: t=<unix>,v1=<hex>,...`,
where each v1 is HMAC-SHA256(secret, "<t>." + raw body). Several v1 entries appear while a
secret is rotated; any one matching is enough. v0 (test-mode legacy) entries are ignored.
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

_REFERENCE_RE = re.compile(r"pi_[A-Za-z0-9_]+")


class SignatureError(Exception):
    """A webhook delivery whose Stripe-Signature does not prove it came from Stripe, now."""


class MalformedEvent(ValueError):
    """A signed body that is not a Stripe event."""


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The Stripe-Signature header Stripe would send for `payload` at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> int:
    """The signature's timestamp when `header` signs `payload` with `secret` within
    `tolerance` seconds of `now` (either way); SignatureError otherwise."""
    if not header:
        raise SignatureError("no Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, equals, value = part.strip().partition("=")
        if not equals:
            raise SignatureError("malformed Stripe-Signature header")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
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
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    wanted = expected.hexdigest()
    if not any(hmac.compare_digest(wanted, candidate) for candidate in signatures):
        raise SignatureError("no signature matches")
    return timestamp


@dataclass(frozen=True, slots=True)
class WebhookEvent:
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


def parse_event(payload: bytes) -> WebhookEvent:
    """The fields of a Stripe event the gateway acts on; MalformedEvent for anything else."""
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
    if event_id is None or event_type is None or created is None or not isinstance(obj, dict):
        raise MalformedEvent("an event needs id, type, created and data.object")
    metadata = obj.get("metadata")
    order = metadata.get("order_id") if isinstance(metadata, dict) else None
    order_id = (
        int(order) if isinstance(order, str) and order.isascii() and order.isdigit() else None
    )
    if event_type.startswith("payment_intent."):
        error = obj.get("last_payment_error")
        reason = None
        if isinstance(error, dict):
            reason = _str_field(error, "message") or _str_field(error, "code")
        return WebhookEvent(
            event_id,
            event_type,
            created,
            payment_reference=_str_field(obj, "id"),
            amount_captured=_int_field(obj, "amount_received"),
            amount_capturable=_int_field(obj, "amount_capturable"),
            failure_reason=reason,
            order_id=order_id,
        )
    if event_type.startswith("charge."):
        return WebhookEvent(
            event_id,
            event_type,
            created,
            payment_reference=_str_field(obj, "payment_intent"),
            amount_captured=_int_field(obj, "amount_captured"),
            amount_refunded=_int_field(obj, "amount_refunded"),
            order_id=order_id,
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
    if not _REFERENCE_RE.fullmatch(reference):
        raise ValueError(f"not a PaymentIntent id: {reference!r}")
    return reference


def _charge(intent: dict[str, Any]) -> ChargeResult:
    status = _INTENT_STATUS.get(str(intent.get("status")), "pending")
    error = intent.get("last_payment_error")
    reason = error.get("message") if isinstance(error, dict) else None
    received = intent.get("amount_received")
    return ChargeResult(
        status,
        str(intent.get("id", "")),
        amount_captured=received if isinstance(received, int) and status == "captured" else 0,
        failure_reason=reason if status == "failed" else None,
    )


class StripeProvider:
    """PaymentIntents with automatic or manual capture, refunds and cancellations."""

    name = "stripe"

    def __init__(
        self, api_key: str, *, api_base: str = "https://api.stripe.com", timeout: float = 10.0
    ) -> None:
        self._api_key = api_key
        self._base = api_base.rstrip("/")
        self._timeout = timeout
        self._client = tornado.httpclient.AsyncHTTPClient()

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
            },
            follow_redirects=False,
            connect_timeout=self._timeout,
            request_timeout=self._timeout,
        )
        try:
            response = await self._client.fetch(request, raise_error=False)
        except (OSError, tornado.httpclient.HTTPClientError) as exc:
            raise ProviderUnavailable(f"Stripe unreachable: {exc}") from None
        if response.code == 599 or response.code >= 500 or response.code == 429:
            raise ProviderUnavailable(f"Stripe answered {response.code}")
        if 300 <= response.code < 400:
            # Redirects are never followed: an API that moves is misconfigured, not to be trusted.
            raise ProviderUnavailable(f"Stripe answered a redirect ({response.code})")
        try:
            body = orjson.loads(response.body or b"{}")
        except orjson.JSONDecodeError:
            raise ProviderUnavailable("Stripe answered something that is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable("Stripe answered something that is not an object")
        return response.code, body

    @staticmethod
    def _error_message(body: dict[str, Any]) -> str:
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or "refused")
        return "refused"

    async def authorize(
        self,
        *,
        order_id: int,
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
            },
            idempotency_key,
        )
        if code == 402:  # a card error: the attempt happened and was declined
            error = body.get("error")
            intent = error.get("payment_intent") if isinstance(error, dict) else None
            reference = str(intent.get("id", "")) if isinstance(intent, dict) else ""
            return ChargeResult("failed", reference, failure_reason=self._error_message(body))
        if code >= 400:
            raise ProviderRejected(self._error_message(body))
        return _charge(body)

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> ChargeResult:
        path = f"/v1/payment_intents/{_checked_reference(reference)}/capture"
        code, body = await self._post(path, {"amount_to_capture": amount}, idempotency_key)
        if code >= 400:
            raise ProviderRejected(self._error_message(body))
        return _charge(body)

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> RefundResult:
        form: dict[str, str | int] = {"payment_intent": _checked_reference(reference)}
        form["amount"] = amount
        code, body = await self._post("/v1/refunds", form, idempotency_key)
        if code >= 400:
            raise ProviderRejected(self._error_message(body))
        status = _REFUND_STATUS.get(str(body.get("status")), "pending")
        reason = body.get("failure_reason")
        return RefundResult(
            status, str(body.get("id", "")), str(reason) if status == "failed" and reason else None
        )

    async def void(self, reference: str, idempotency_key: str) -> ChargeResult:
        path = f"/v1/payment_intents/{_checked_reference(reference)}/cancel"
        code, body = await self._post(path, {}, idempotency_key)
        if code >= 400:
            raise ProviderRejected(self._error_message(body))
        return ChargeResult("failed", str(body.get("id", reference)), failure_reason="voided")
