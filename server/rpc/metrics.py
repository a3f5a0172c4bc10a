"""gRPC metrics: calls and latency by method and status code, and the call's request id.

Registered as the first interceptor, so what the later ones refuse (UNAUTHENTICATED,
RESOURCE_EXHAUSTED) is counted too. The request id comes from `x-request-id` metadata when it
is sane, else a new one; it is set in the logging context variable for the call's task, so log
lines and enqueued tasks of the call carry it, as they do for REST.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from server import metrics
from server.observability import request_id_var
from server.rpc.interception import answer_once, stream_of, wrap_handler

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        request_id = _request_id(handler_call_details)
        return wrap_handler(
            handler,
            lambda behavior: _unary(behavior, method, request_id),
            lambda behavior: _streaming(behavior, method, request_id),
        )


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == "x-request-id":
            text = value.decode() if isinstance(value, bytes) else str(value)
            if _REQUEST_ID_RE.match(text):
                return text
    return uuid.uuid4().hex


def _code_of(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return default


@contextmanager
def _measured(context: grpc.aio.ServicerContext, method: str, request_id: str) -> Iterator[None]:
    """Count and time the call run inside, by the status code it ends with."""
    request_id_var.set(request_id)
    started = time.perf_counter()
    code = "OK"
    try:
        yield
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    except grpc.aio.AbortError:
        code = _code_of(context, "UNKNOWN")
        raise
    except Exception:
        code = "UNKNOWN"
        raise
    finally:
        if code == "OK":
            code = _code_of(context, "OK")  # a servicer may set_code() without raising
        metrics.observe_grpc(method, code, time.perf_counter() - started)


def _unary(behavior: Callable[..., Any], method: str, request_id: str) -> Callable[..., Any]:
    async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _measured(context, method, request_id):
            return await answer_once(behavior(request, context))

    return measured


def _streaming(behavior: Callable[..., Any], method: str, request_id: str) -> Callable[..., Any]:
    async def measured(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with _measured(context, method, request_id):
            async for message in stream_of(behavior(request, context)):
                yield message

    return measured
