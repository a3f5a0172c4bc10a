"""Request messages a servicer can trust to decode and to fit PostgreSQL text.

grpc answers a request it cannot decode (a truncated field, invalid UTF-8 in a string) with
UNKNOWN, and PostgreSQL refuses NUL in text with an error that would surface as UNKNOWN too.
Both are the caller's mistake: INVALID_ARGUMENT, as REST answers them 400 / 422. The
interceptor swaps each method's request decoder for one that keeps the failure, and checks
every string of a decoded request (nested messages, repeated fields and maps included) before
the servicer runs. It sits innermost, so authentication and rate limits still come first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from typing_extensions import override

from server.rpc.interception import answer_once, is_unguarded, stream_of, wrap_handler

Continuation = Callable[[grpc.HandlerCallDetails], Any]


class Undecodable:
    """What the decoder hands on instead of a request it could not decode."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def lenient(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decoder(data: bytes) -> Any:
        try:
            return decode(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            return Undecodable(str(exc) or type(exc).__name__)

    return decoder


def nul_field(message: Message) -> str | None:
    """The name of a string field of `message` (at any depth) that holds NUL, else None."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            texts = (value,) if isinstance(value, str) else value
            if any("\x00" in text for text in texts):
                return field.name
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:  # map<string, ...>: keys and values
                items = [m for pair in value.items() for m in pair]
            else:
                items = [value] if isinstance(value, Message) else list(value)
            for item in items:
                if isinstance(item, str) and "\x00" in item:
                    return field.name
                found = nul_field(item) if isinstance(item, Message) else None
                if found is not None:
                    return f"{field.name}.{found}"
    return None


async def refuse_bad(request: Any, context: grpc.aio.ServicerContext) -> None:
    """Abort INVALID_ARGUMENT when the request could not be decoded or holds NUL text."""
    if isinstance(request, Undecodable):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request could not be decoded: {request.reason}"
        )
    if isinstance(request, Message):
        field = nul_field(request)
        if field is not None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{field}: text cannot contain NUL characters"
            )


def _checked_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse_bad(request, context)
        return await answer_once(behavior(request, context))

    return checked


def _checked_streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse_bad(request, context)
        async for message in stream_of(behavior(request, context)):
            yield message

    return checked


class RequestCheckInterceptor(grpc.aio.ServerInterceptor):
    """Undecodable or NUL-holding requests get INVALID_ARGUMENT, never reach a servicer."""

    def __init__(self) -> None:
        self._checked: dict[str, grpc.RpcMethodHandler] = {}  # one wrap per method

    @override
    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        checked = self._checked.get(method)
        if checked is not None:
            return checked
        handler = await continuation(handler_call_details)
        if handler is None or is_unguarded(method) or handler.request_streaming:
            return handler  # (no method of ours takes a stream of requests)
        decoder = handler.request_deserializer
        if decoder is not None:
            handler = handler._replace(request_deserializer=lenient(decoder))
        checked = wrap_handler(handler, _checked_unary, _checked_streaming)
        self._checked[method] = checked
        return checked
