"""gRPC authentication: `authorization: Bearer <jwt>` metadata, the same tokens as REST.

`AuthInterceptor` verifies the token with the shared TokenService before any servicer code
runs, then checks the method's declared access level (each server/rpc feature's `ACCESS`, the
same levels and `check_access` as REST, services/permissions.py). A call without the metadata is
anonymous; a call with a bad token is refused with UNAUTHENTICATED at once. Health and
reflection never look at tokens.

Servicers read the caller from the `current_principal` context variable (set in the call's own
task), or with `require_principal`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar

import grpc
from typing_extensions import override

from server.domain.errors import DomainError, PermissionDenied, Unauthenticated
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


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Names the caller of every call and checks the method's declared access level
    (`access`: full method name → level, services/permissions.py); a method with no declared
    level is refused, so a new one cannot be forgotten open."""

    def __init__(self, tokens: TokenService, access: Mapping[str, str]) -> None:
        self.tokens = tokens
        self.access = access

    @override
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_unguarded(method):
            return handler
        level = self.access.get(method)
        if level is None:
            return guard_handler(handler, _refuse(PermissionDenied(f"{method} declares no access")))
        header = metadata_value(handler_call_details, "authorization")
        if header is None:
            return guard_handler(handler, _as(None, level))
        try:
            caller = self.tokens.authenticate_header(header)
        except Unauthenticated as error:
            return guard_handler(handler, _refuse(error))
        return guard_handler(handler, _as(caller, level))


def _as(
    caller: Principal | None, level: str
) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
    async def set_caller(context: grpc.aio.ServicerContext) -> None:
        current_principal.set(caller)
        try:
            permissions.check_access(level, caller)
        except DomainError as error:
            await abort_with(context, error)

    return set_caller


def _refuse(error: DomainError) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
    async def refuse(context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, error)

    return refuse
