"""Small pieces every servicer needs on the wire (timestamps, request fields validated as the
REST body would be). Who is calling is server/rpc/auth.py's `current_principal`, set by its
interceptor, which also checks access."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import msgspec
from google.protobuf.timestamp_pb2 import Timestamp

from server.domain.errors import FieldError, ValidationFailed

T = TypeVar("T", bound=msgspec.Struct)


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def validated(data: dict[str, object], into: type[T]) -> T:
    """The request's fields under the REST body's rules: a violation is INVALID_ARGUMENT
    naming the field, as it is a 422 there."""
    try:
        return msgspec.convert(data, into)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        field = where.rstrip("`").lstrip(".") or "request"
        raise ValidationFailed(
            "the request is invalid", errors=[FieldError(field, message)]
        ) from None
