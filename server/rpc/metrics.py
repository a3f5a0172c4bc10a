"""gRPC metrics: calls and latency by method and status code, and the call's request id.

Registered as the first interceptor, so what the later ones refuse (UNAUTHENTICATED,
RESOURCE_EXHAUSTED) is counted too. The request id comes from `x-request-id` metadata when it
is sane, else a new one; it is set in the logging context variable for the call's task, so log
lines and enqueued tasks of the call carry it, as they do for REST.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server import metrics
from server.observability import request_id_var

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
        replace: Callable[..., grpc.RpcMethodHandler] = handler._replace
        if handler.request_streaming and handler.response_streaming:
            return replace(stream_stream=_streaming(handler.stream_stream, method, request_id))
        if handler.request_streaming:
            return replace(stream_unary=_unary(handler.stream_unary, method, request_id))
        if handler.response_streaming:
            return replace(unary_stream=_streaming(handler.unary_stream, method, request_id))
        return replace(unary_unary=_unary(handler.unary_unary, method, request_id))


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


def _unary(behavior: Callable[..., Any], method: str, request_id: str) -> Callable[..., Any]:
    async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id_var.set(request_id)
        started = time.perf_counter()
        code = "OK"
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
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

    return measured


def _streaming(behavior: Callable[..., Any], method: str, request_id: str) -> Callable[..., Any]:
    async def measured(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request_id_var.set(request_id)
        started = time.perf_counter()
        code = "OK"
        try:
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for message in result:
                    yield message
            elif inspect.isawaitable(result):
                await result  # a servicer that answers through context.write()
            else:
                for message in result:
                    yield message
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
                code = _code_of(context, "OK")
            metrics.observe_grpc(method, code, time.perf_counter() - started)

    return measured
