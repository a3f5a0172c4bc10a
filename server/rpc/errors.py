"""Domain errors → gRPC status codes, in one place (the gRPC twin of http/base.status_of).

Servicer methods are wrapped with `@translate_errors`: a `DomainError` raised by a service
aborts the call with the mapped code and the error's detail; PostgreSQL being unreachable is
UNAVAILABLE (with retry-after); anything else propagates (grpc.aio answers UNKNOWN and logs it,
which is what an unexpected failure should look like).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from server.db.pool import database_unavailable
from server.domain import errors

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]

# Checked in order, most specific first: AlreadyExists is a Conflict, but its own code.
_CODES: tuple[tuple[type[errors.DomainError], grpc.StatusCode], ...] = (
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ValidationFailed, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def status_code_of(error: errors.DomainError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


def details_of(error: errors.DomainError) -> str:
    """The detail, with field errors appended so a gRPC caller sees which field failed."""
    if not error.errors:
        return error.detail
    fields = "; ".join(f"{e.field}: {e.message}" for e in error.errors)
    return f"{error.detail} ({fields})"


async def abort_with(context: grpc.aio.ServicerContext, error: errors.DomainError) -> None:
    metadata: tuple[tuple[str, str], ...] = ()
    if isinstance(error, errors.RateLimited):
        metadata = (("retry-after", str(max(1, int(error.retry_after + 0.999)))),)
    elif isinstance(error, errors.Unavailable):
        metadata = (("retry-after", str(error.retry_after)),)
    await context.abort(status_code_of(error), details_of(error), metadata)


def translate_errors(method: Handler[Request, Response]) -> Handler[Request, Response]:
    """Decorate a servicer method so domain errors become the matching status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except errors.DomainError as error:
            await abort_with(context, error)
            raise AssertionError("context.abort returned") from error  # abort always raises
        except Exception as error:
            if not database_unavailable(error):
                raise
            log.warning("%s: PostgreSQL unavailable (%r)", method.__name__, error)
            await abort_with(context, errors.DATABASE_UNAVAILABLE)
            raise AssertionError("context.abort returned") from error

    return wrapper
