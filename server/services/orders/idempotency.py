"""Idempotency-Key: the key is claimed in its own short transaction before the checkout starts.
The answer is stored with the key: a placed order in the same transaction as the order itself
(both or neither), a refusal the checkout decided on (409 short stock, 422 empty cart or unusable
promotion, ...) right after its rollback, so a retry with the same key answers exactly as the
first request did. Anything that is not an answer (a crash, a lost connection, a cancelled call)
releases the claim instead; nothing was committed in that case."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
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
    """The answer to a checkout: an order (fresh, or stored by an earlier request with the same
    key), or the stored refusal of an earlier request, which the edge answers as it answered
    the first time."""

    replayed: bool
    order: Order | None
    body: bytes = b""  # the order document as first encoded (a replay sends the same bytes)
    error: DomainError | None = None


class StoredAnswer(IntEnum):
    """What a key's answer was, as kept in idempotency_keys.response_status. The numbers are
    the ones earlier versions wrote (HTTP statuses then), so answers stored before an upgrade
    stay readable; nothing here is an HTTP status any more, the edge decides those."""

    PLACED = 201
    CONFLICT = 409
    NOT_FOUND = 404
    INVALID = 422
    BAD_REQUEST = 400


PLACED = StoredAnswer.PLACED
# The refusals stored with a key; other errors release the key (a retry runs the checkout again).
_STORED: tuple[tuple[type[DomainError], StoredAnswer], ...] = (
    (Conflict, StoredAnswer.CONFLICT),
    (NotFound, StoredAnswer.NOT_FOUND),
    (ValidationFailed, StoredAnswer.INVALID),
    (BadRequest, StoredAnswer.BAD_REQUEST),
)
_ERROR_OF_CODE: dict[int, type[DomainError]] = {code: cls for cls, code in _STORED}


def refusal_code(error: DomainError) -> StoredAnswer | None:
    """The code `error` is stored under, or None when it is not stored."""
    for cls, code in _STORED:
        if isinstance(error, cls):
            return code
    return None


def refusal_record(error: DomainError) -> bytes:
    """What is stored of a refusal: its detail and field errors."""
    record: dict[str, Any] = {"detail": error.detail}
    if error.errors:
        record["errors"] = [e.as_problem() for e in error.errors]
    return orjson.dumps(record)


def stored_answer(held: idempotency_db.StoredKey, request: IdempotencyKey) -> Placement:
    if held.request_hash != request.request_hash:
        raise ValidationFailed(
            "this Idempotency-Key was already used with a different request",
            errors=[FieldError("Idempotency-Key", "reused with a different request")],
        )
    if held.state != "done" or held.response_status is None or held.response_body is None:
        raise Conflict("a request with this Idempotency-Key is still in progress; retry later")
    body = held.response_body
    if held.response_status == PLACED:
        return Placement(True, msgspec.json.decode(body, type=Order), body)
    record = orjson.loads(body)  # also reads the problem documents earlier versions stored
    error_type = _ERROR_OF_CODE.get(held.response_status, BadRequest)
    error = error_type(
        record.get("detail", ""),
        errors=[FieldError.from_problem(e) for e in record.get("errors", [])],
    )
    return Placement(True, None, error=error)
