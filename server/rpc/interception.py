"""Running a check before a gRPC method, whatever its shape (unary or streaming).

A `grpc.aio.ServerInterceptor` only sees the method name and metadata; the peer address and
`context.abort` are available once the call runs. `guard_handler` returns the same method
handler with `check(context)` awaited first, in the call's own task, so a check can abort with
a status code or set context variables that the servicer then reads.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]

# Infrastructure services that never need a caller's identity and are never budgeted.
UNGUARDED_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def is_unguarded(method: str) -> bool:
    return method.startswith(UNGUARDED_PREFIXES)


def metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for name, value in details.invocation_metadata or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def guard_handler(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """`handler` with `check` awaited before its behaviour runs."""
    # grpc's method handlers are namedtuples: swap in the guarded behaviour, keep the codecs.
    replace: Callable[..., grpc.RpcMethodHandler] = handler._replace
    if handler.request_streaming and handler.response_streaming:
        return replace(stream_stream=_guard_streaming(handler.stream_stream, check))
    if handler.request_streaming:
        return replace(stream_unary=_guard_unary(handler.stream_unary, check))
    if handler.response_streaming:
        return replace(unary_stream=_guard_streaming(handler.unary_stream, check))
    return replace(unary_unary=_guard_unary(handler.unary_unary, check))


def _guard_unary(behavior: Callable[..., Any], check: Check) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return guarded


def _guard_streaming(behavior: Callable[..., Any], check: Check) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        result = behavior(request, context)
        if inspect.isasyncgen(result):
            async for message in result:
                yield message
        elif inspect.isawaitable(result):
            await result  # a servicer that answers through context.write()
        else:
            for message in result:
                yield message

    return guarded
