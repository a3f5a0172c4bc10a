"""gRPC authentication: `authorization: Bearer <jwt>` metadata, the same tokens as REST.

`AuthInterceptor` verifies the token with the shared TokenService before any servicer code
runs. A call without the metadata passes as anonymous (the servicer decides what anonymous
callers may do); a call with a bad token is refused with UNAUTHENTICATED at once. Health and
reflection never look at tokens.

Servicers read the caller from the `current_principal` context variable (set in the call's own
task), or use `require_principal` / `require_role`, which abort with UNAUTHENTICATED /
PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import grpc
from typing_extensions import override

from server.domain.errors import DomainError, Unauthenticated
from server.domain.principal import Principal
from server.rpc.errors import abort_with
from server.rpc.interception import guard_handler, is_unguarded, metadata_value
from server.services import permissions
from server.services.tokens import TokenService

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


async def require_principal(context: grpc.aio.ServicerContext) -> Principal:
    """The caller, or the call ends with UNAUTHENTICATED."""
    try:
        return permissions.require_authenticated(current_principal.get())
    except DomainError as error:
        await abort_with(context, error)
        raise AssertionError("context.abort returned") from error


async def require_role(context: grpc.aio.ServicerContext, *roles: str) -> Principal:
    """The caller when it has one of `roles`; else UNAUTHENTICATED / PERMISSION_DENIED."""
    try:
        return permissions.require_role(current_principal.get(), *roles)
    except DomainError as error:
        await abort_with(context, error)
        raise AssertionError("context.abort returned") from error


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenService) -> None:
        self.tokens = tokens

    @override
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or is_unguarded(handler_call_details.method):
            return handler
        header = metadata_value(handler_call_details, "authorization")
        if header is None:
            return guard_handler(handler, _as(None))
        try:
            caller = self.tokens.authenticate_header(header)
        except Unauthenticated as error:
            return guard_handler(handler, _refuse(error))
        return guard_handler(handler, _as(caller))


def _as(caller: Principal | None) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
    async def set_caller(context: grpc.aio.ServicerContext) -> None:
        current_principal.set(caller)

    return set_caller


def _refuse(error: DomainError) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
    async def refuse(context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, error)

    return refuse
