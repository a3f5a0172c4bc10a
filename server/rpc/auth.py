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


# Awaited before a refusal is answered: the rate limiter charges the peer's anonymous budget,
# as REST charges a request it then answers 401 (and may answer RESOURCE_EXHAUSTED instead).
BeforeRefusal = Callable[[grpc.aio.ServicerContext, grpc.HandlerCallDetails], Awaitable[None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Names the caller of every call and checks the method's declared access level
    (`access`: full method name → level, services/permissions.py); a method with no declared
    level is refused, so a new one cannot be forgotten open."""

    def __init__(
        self,
        tokens: TokenService,
        access: Mapping[str, str],
        before_refusal: BeforeRefusal | None = None,
    ) -> None:
        self.tokens = tokens
        self.access = access
        self.before_refusal = before_refusal

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
            error = PermissionDenied(f"{method} declares no access")
            return guard_handler(handler, self._refuse(error, handler_call_details))
        header = metadata_value(handler_call_details, "authorization")
        if header is None:
            return guard_handler(handler, self._as(None, level, handler_call_details))
        try:
            caller = self.tokens.authenticate_header(header)
        except Unauthenticated as error:
            return guard_handler(handler, self._refuse(error, handler_call_details))
        return guard_handler(handler, self._as(caller, level, handler_call_details))

    def _as(
        self, caller: Principal | None, level: str, details: grpc.HandlerCallDetails
    ) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
        async def set_caller(context: grpc.aio.ServicerContext) -> None:
            current_principal.set(caller)
            try:
                permissions.check_access(level, caller)
            except DomainError as error:
                await self._refused(context, details, error)

        return set_caller

    def _refuse(
        self, error: DomainError, details: grpc.HandlerCallDetails
    ) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
        async def refuse(context: grpc.aio.ServicerContext) -> None:
            await self._refused(context, details, error)

        return refuse

    async def _refused(
        self,
        context: grpc.aio.ServicerContext,
        details: grpc.HandlerCallDetails,
        error: DomainError,
    ) -> None:
        if self.before_refusal is not None:
            await self.before_refusal(context, details)
        await abort_with(context, error)
