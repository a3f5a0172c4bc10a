"""Idempotency-Key: the key is claimed in its own short transaction before the checkout starts.
The answer is stored with the key: a placed order in the same transaction as the order itself
(both or neither), a refusal the checkout decided on (409 short stock, 422 empty cart or unusable
promotion, ...) right after its rollback, so a retry with the same key answers exactly as the
first request did. Anything that is not an answer (a crash, a lost connection, a cancelled call)
releases the claim instead; nothing was committed in that case."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
import orjson

from server.db import idempotency as idempotency_db
from server.domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    FieldError,
    NotFound,
    ValidationFailed,
)
from server.services.orders.model import MAX_IDEMPOTENCY_KEY, Order

# ---- idempotency ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    request_hash: str


def idempotency_key(key: str | None, method: str, path: str, body: Any) -> IdempotencyKey | None:
    """The key and the request's fingerprint: sha256 of method, path and the canonical body.

    `body` is the validated request as builtins, so formatting, key order and explicit nulls
    of the JSON do not change the fingerprint.
    """
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationFailed(
            "the Idempotency-Key is invalid",
            errors=[
                FieldError("Idempotency-Key", f"1 to {MAX_IDEMPOTENCY_KEY} printable characters")
            ],
        )
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(method.upper().encode() + b" " + path.encode() + b"\n" + canonical)
    return IdempotencyKey(key, digest.hexdigest())


@dataclass(frozen=True, slots=True)
class Placement:
    """The answer to a checkout: a fresh order, or the stored answer of an earlier request."""

    status: int
    body: bytes  # the order document, or a problem document when a replayed refusal
    replayed: bool
    order: Order | None
    error: DomainError | None = None


_REPLAYABLE: tuple[tuple[type[DomainError], int], ...] = (
    (Conflict, 409),
    (NotFound, 404),
    (ValidationFailed, 422),
    (BadRequest, 400),
)
_ERROR_OF_STATUS: dict[int, type[DomainError]] = {s: cls for cls, s in _REPLAYABLE}


def problem_document(status: int, error: DomainError) -> dict[str, Any]:
    """The problem+json body REST answers with (mirrors server.http.base.problem)."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": error.detail or title,
    }
    if error.errors:
        body["errors"] = [e.as_problem() for e in error.errors]
    return body


def replayable_status(error: DomainError) -> int | None:
    for cls, status in _REPLAYABLE:
        if isinstance(error, cls):
            return status
    return None


def stored_answer(held: idempotency_db.StoredKey, request: IdempotencyKey) -> Placement:
    if held.request_hash != request.request_hash:
        raise ValidationFailed(
            "this Idempotency-Key was already used with a different request",
            errors=[FieldError("Idempotency-Key", "reused with a different request")],
        )
    if held.state != "done" or held.response_status is None or held.response_body is None:
        raise Conflict("a request with this Idempotency-Key is still in progress; retry later")
    body = held.response_body
    if held.response_status < 300:
        return Placement(held.response_status, body, True, msgspec.json.decode(body, type=Order))
    problem = orjson.loads(body)
    error_type = _ERROR_OF_STATUS.get(held.response_status, BadRequest)
    error = error_type(
        problem.get("detail", ""),
        errors=[FieldError.from_problem(e) for e in problem.get("errors", [])],
    )
    return Placement(held.response_status, body, True, None, error)
