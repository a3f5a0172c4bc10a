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


Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def wrap_handler(
    handler: grpc.RpcMethodHandler, unary: Wrap, streaming: Wrap
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped: by `unary` when it answers once, by `streaming`
    when it answers with a stream (an async generator)."""
    # grpc's method handlers are namedtuples: swap in the wrapped behaviour, keep the codecs.
    replace: Callable[..., grpc.RpcMethodHandler] = handler._replace
    if handler.request_streaming and handler.response_streaming:
        return replace(stream_stream=streaming(handler.stream_stream))
    if handler.request_streaming:
        return replace(stream_unary=unary(handler.stream_unary))
    if handler.response_streaming:
        return replace(unary_stream=streaming(handler.unary_stream))
    return replace(unary_unary=unary(handler.unary_unary))


async def answer_once(result: Any) -> Any:
    """What a unary servicer's `result` (a value or an awaitable) answers."""
    return await result if inspect.isawaitable(result) else result


async def stream_of(result: Any) -> AsyncIterator[Any]:
    """The messages of a streaming servicer's `result`, whatever it returned."""
    if inspect.isasyncgen(result):
        async for message in result:
            yield message
    elif inspect.isawaitable(result):
        await result  # a servicer that answers through context.write()
    else:
        for message in result:
            yield message


def guard_handler(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """`handler` with `check` awaited before its behaviour runs."""
    return wrap_handler(
        handler,
        lambda behavior: _guard_unary(behavior, check),
        lambda behavior: _guard_streaming(behavior, check),
    )


def _guard_unary(behavior: Callable[..., Any], check: Check) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        return await answer_once(behavior(request, context))

    return guarded


def _guard_streaming(behavior: Callable[..., Any], check: Check) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        async for message in stream_of(behavior(request, context)):
            yield message

    return guarded
