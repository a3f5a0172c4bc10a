"""A local stand-in for Stripe's API (the one external service that cannot run here): a real
HTTP server on a free port that answers PaymentIntent, capture, cancel and refund calls as
Stripe does, and records each request. Outcomes follow the payment method, like Stripe's test
cards: tok_visa succeeds, tok_chargeDeclined is a 402 card error, tok_processing stays
`processing` (the webhook settles it), tok_explode is a 500."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import tornado.httpserver
import tornado.web

from loadtests.harness import free_port

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"


def recorded_event(name: str, **changes: Any) -> dict[str, Any]:
    """A recorded Stripe event (tests/fixtures/stripe/<name>.json) with `data.object` fields
    replaced by `changes` (the PaymentIntent id of the payment under test, say), under a fresh
    event id (each test delivers its own event)."""
    event: dict[str, Any] = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    event["data"]["object"].update(changes)
    event["id"] = f"evt_{uuid.uuid4().hex}"
    return event


@dataclass
class Recorded:
    path: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeStripe:
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refund_status: str = "succeeded"  # what a new refund answers (card refunds: succeeded)
    server: tornado.httpserver.HTTPServer | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = tornado.web.Application(
            [
                (r"/v1/payment_intents", _Intents, {"stripe": self}),
                (r"/v1/payment_intents/(pi_\w+)/(capture|cancel)", _IntentAction, {"stripe": self}),
                (r"/v1/refunds", _Refunds, {"stripe": self}),
                (r"/moved/v1/.*", _Moved),
            ]
        )
        self.port = free_port()
        self.server = app.listen(self.port, address="127.0.0.1")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_3Fake{next(self._ids):06d}"


class _Handler(tornado.web.RequestHandler):
    def initialize(self, stripe: FakeStripe) -> None:
        self.stripe = stripe

    def record(self) -> dict[str, str]:
        form = dict(parse_qsl(self.request.body.decode()))
        self.stripe.requests.append(
            Recorded(self.request.path, form, {k: v for k, v in self.request.headers.items()})
        )
        return form

    def answer(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(body))


class _Intents(_Handler):
    def post(self) -> None:
        form = self.record()
        token = form.get("payment_method", "")
        if token == "tok_explode":
            self.answer(500, {"error": {"type": "api_error", "message": "boom"}})
            return
        intent: dict[str, Any] = {
            "id": self.stripe.next_id("pi"),
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "currency": form["currency"],
            "amount_received": 0,
            "amount_capturable": 0,
            "capture_method": form.get("capture_method", "automatic"),
            "metadata": {
                "order_id": form.get("metadata[order_id]"),
                "payment_id": form.get("metadata[payment_id]"),
            },
            "last_payment_error": None,
        }
        if token == "tok_chargeDeclined":
            intent["status"] = "requires_payment_method"
            error = {
                "type": "card_error",
                "code": "card_declined",
                "message": "Your card was declined.",
            }
            self.answer(402, {"error": {**error, "payment_intent": intent}})
            return
        if token == "tok_processing":
            intent["status"] = "processing"
        elif intent["capture_method"] == "manual":
            intent["status"] = "requires_capture"
            intent["amount_capturable"] = intent["amount"]
        else:
            intent["status"] = "succeeded"
            intent["amount_received"] = intent["amount"]
        self.stripe.intents[intent["id"]] = intent
        self.answer(200, intent)


class _IntentAction(_Handler):
    def post(self, intent_id: str, action: str) -> None:
        form = self.record()
        intent = self.stripe.intents.get(intent_id)
        if intent is None:
            self.answer(404, {"error": {"type": "invalid_request_error", "message": "No such"}})
            return
        if action == "capture":
            intent["status"] = "succeeded"
            intent["amount_received"] = int(form.get("amount_to_capture", intent["amount"]))
        else:
            intent["status"] = "canceled"
        self.answer(200, intent)


class _Refunds(_Handler):
    def post(self) -> None:
        form = self.record()
        self.answer(
            200,
            {
                "id": self.stripe.next_id("re"),
                "object": "refund",
                "amount": int(form["amount"]),
                "payment_intent": form["payment_intent"],
                "status": self.stripe.refund_status,
            },
        )


class _Moved(tornado.web.RequestHandler):
    def post(self) -> None:
        self.redirect("https://elsewhere.invalid/v1/payment_intents", status=302)
