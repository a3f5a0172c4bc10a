"""Live updates at /api/v1/stream: a WebSocket, or Server-Sent Events for simple clients.

`GET /api/v1/stream?product_id=12&product_id=13&orders=true`

- `product_id` (up to `MAX_PRODUCTS`): anyone may follow the stock and price of products
  (`stock.changed`, `product.updated`).
- `orders=true`: the caller's own orders (`order.created`, `order.paid`, `order.shipped`, ...);
  needs an access token, as `Authorization: Bearer` or, since browsers cannot set headers on a
  WebSocket or an EventSource, as the `access_token` query parameter (the gateway never logs
  query strings).
- An upgrade request gets a WebSocket; any other request a `text/event-stream`.

Every message is one JSON object `{"topic", "type", "data", "sent_at"}` (a WebSocket text
message, or an SSE `data:` line). The first is `{"type": "ready", "topics": [...]}`: the client
hears every change committed from then on. The last may be `{"type": "closing", "reason": ...}`
(a slow consumer, an expired token, a gateway shutting down). A stream lasts no longer than its
token. Delivery is best effort, at most once; after a reconnect, read the current state over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
import tornado.websocket
from typing_extensions import override

from server import metrics
from server.domain.errors import (
    BadRequest,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from server.domain.principal import Principal
from server.http.base import ApiError, ApiHandler
from server.http.cors import CorsPolicy
from server.live import END, Refused, Subscriber
from server.openapi import Operation, Param, read_query
from server.services.events import order_topic, product_topic

MAX_PRODUCTS = 50
# An idle SSE stream sends a comment this often, so proxies keep it and clients notice a dead one;
# WebSockets are pinged as often.
HEARTBEAT_SECONDS = 15.0
# A client that takes longer than this to take one message is too slow to keep.
WRITE_TIMEOUT_SECONDS = 10.0
# Close codes (4000-4999 are the application's): the reason is in the `closing` message too.
CLOSE_CODES = {"slow": 4008, "expired": 4001, "shutdown": 1001}

PARAMS = (
    Param(
        "product_id",
        int,
        "A product whose stock and price changes to receive; repeat for several.",
        minimum=1,
        maximum=2**63 - 1,
        repeated=True,
        max_items=MAX_PRODUCTS,
    ),
    Param("orders", bool, "Also the caller's own order status changes (needs a token)."),
    Param(
        "access_token",
        str,
        "The access token, for clients that cannot send `Authorization` (browsers).",
        max_length=4096,
    ),
)
_DESCRIPTION = (
    "Upgrade to a WebSocket, or read `text/event-stream`. Messages are JSON "
    "`{topic, type, data, sent_at}`; the first is `{type: ready, topics}` and the last may be "
    "`{type: closing, reason}` (slow consumer, token expired, shutdown). Types: `stock.changed`, "
    "`product.updated` on `product:<id>`; `order.created`, `order.paid`, `order.shipped`, "
    "`order.delivered`, `order.cancelled`, `order.refunded`, `refund.created` on `order:<user>`. "
    "A stream ends when its token expires; at most `STREAM_MAX_PER_USER` per user (429) and "
    "`STREAM_MAX_CONNECTIONS` per gateway (503)."
)


def _message(message_type: str, **data: Any) -> bytes:
    return orjson.dumps({"type": message_type, **data, "sent_at": time.time()})


class StreamHandler(tornado.websocket.WebSocketHandler, ApiHandler):
    """One live stream. Tornado's WebSocketHandler speaks the protocol; ApiHandler gives the
    problem+json errors, CORS, rate budget and access rules every endpoint has."""

    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Live order, stock and price updates (WebSocket or SSE)",
            query=PARAMS,
            content_type="text/event-stream",
            errors=(401, 422, 426, 429, 503),
            description=_DESCRIPTION,
        )
    }
    subscriber: Subscriber | None = None
    transport = "sse"
    _expires_at: float | None = None
    _sender: asyncio.Task[None] | None = None
    _opened = False  # a WebSocket past its handshake
    _opened_logged = False  # an SSE stream's request line is written when it opens

    # ---- both transports ------------------------------------------------------------------

    @override
    async def get(self, *args: Any, **kwargs: Any) -> None:
        topics, principal = self._requested_topics()
        try:
            self.subscriber = self.ctx.live.subscribe(
                topics, principal.user_id if principal is not None else None
            )
        except Refused as exc:
            if exc.per_user:
                raise RateLimited(str(exc), retry_after=HEARTBEAT_SECONDS) from None
            raise Unavailable(str(exc), retry_after=5) from None
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            self.transport = "websocket"
            await super().get(*args, **kwargs)  # the handshake; open() follows a 101
        else:
            await self._serve_events()

    @override
    async def prepare(self) -> None:
        await super().prepare()
        if self._finished or self.request.headers.get("Upgrade", "").lower() != "websocket":
            return
        # The handshake's own refusals, as problem+json rather than Tornado's plain text.
        connection = self.request.headers.get("Connection", "").lower()
        if "upgrade" not in (token.strip() for token in connection.split(",")):
            raise BadRequest('a WebSocket upgrade needs "Connection: Upgrade"')
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            raise PermissionDenied(f"WebSocket connections from {origin} are not allowed")
        if self.request.headers.get("Sec-WebSocket-Version") != "13":  # all Tornado speaks
            raise ApiError(
                426,
                "this server speaks WebSocket version 13",
                headers={"Sec-WebSocket-Version": "13"},
            )
        if not self.request.headers.get("Sec-WebSocket-Key"):
            raise BadRequest("a WebSocket upgrade needs Sec-WebSocket-Key")

    def _requested_topics(self) -> tuple[list[str], Principal | None]:
        query = read_query(self, PARAMS)
        principal = self.principal
        token = query["access_token"]
        if token is not None:
            principal, expires_at = self.ctx.tokens.verify_access_until(token)
            self._expires_at = float(expires_at)
        elif principal is not None:
            header = self.request.headers["Authorization"]
            _, self._expires_at = self.ctx.tokens.verify_access_until(
                header.partition(" ")[2].strip()
            )
        topics = [product_topic(p) for p in dict.fromkeys(query["product_id"])]
        if query["orders"]:
            if principal is None:
                raise Unauthenticated("orders=true needs an access token")
            topics.append(order_topic(principal.user_id))
        if not topics:
            raise ValidationFailed("give product_id (one or more) or orders=true")
        return topics, principal

    async def _next(self) -> bytes | None:
        """The next message to send, or None when it is time for a heartbeat. END (empty) when
        the stream is over; `subscriber.closed` says why."""
        subscriber = self.subscriber
        assert subscriber is not None
        wait = HEARTBEAT_SECONDS
        if self._expires_at is not None:
            left = self._expires_at - time.time()
            if left <= 0:
                subscriber.close("expired")
                return END
            wait = min(wait, left)
        try:
            async with asyncio.timeout(wait):
                return await subscriber.queue.get()
        except TimeoutError:
            return None

    def _release(self) -> None:
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None:
            self.ctx.live.unsubscribe(subscriber)

    def _ready(self) -> bytes:
        assert self.subscriber is not None
        return _message("ready", topics=sorted(self.subscriber.topics))

    def _closing(self) -> bytes:
        assert self.subscriber is not None
        return _message("closing", reason=self.subscriber.closed or "closed")

    @override
    def on_finish(self) -> None:
        super().on_finish()
        if self.transport == "sse" or self.get_status() != 101:
            self._release()  # an SSE stream ended, or a handshake was refused

    # ---- Server-Sent Events -------------------------------------------------------------------

    async def _serve_events(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        metrics.STREAM_CONNECTIONS.labels("sse").inc()
        # A stream is not a request to drain at shutdown: the hub ends it then (close_all).
        self._uncount()
        try:
            await self._send_event(b"retry: 3000\n\ndata: " + self._ready() + b"\n\n")
            self._log_opened()
            while True:
                message = await self._next()
                if message is None:
                    await self._send_event(b": heartbeat\n\n")
                elif message is END:
                    await self._send_event(b"data: " + self._closing() + b"\n\n")
                    break
                else:
                    await self._send_event(b"data: " + message + b"\n\n")
                    metrics.STREAM_MESSAGES.inc()
        except (tornado.iostream.StreamClosedError, TimeoutError):
            pass  # gone, or too slow to take a message
        finally:
            metrics.STREAM_CONNECTIONS.labels("sse").dec()
            self._release()
        if not self._finished:
            self.finish()

    def _log_opened(self) -> None:
        """The access log line and the route's latency histogram take the stream's opening (as
        a WebSocket's 101 does), not its whole life: minutes there would drown the figures."""
        self._log()
        self._opened_logged = True

    @override
    def _log(self) -> None:
        if not self._opened_logged:
            super()._log()

    async def _send_event(self, chunk: bytes) -> None:
        self.write(chunk)
        async with self._write_deadline():
            await self.flush()

    @contextlib.asynccontextmanager
    async def _write_deadline(self) -> AsyncIterator[None]:
        """A client that takes longer than WRITE_TIMEOUT_SECONDS to take a message is dropped
        like one whose queue overflowed (TimeoutError ends the sending loop)."""
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                yield
        except TimeoutError:
            if self.subscriber is not None and self.subscriber.closed is None:
                metrics.STREAM_DROPPED.inc()
                self.subscriber.close("slow")
            raise

    @override
    def on_connection_close(self) -> None:
        # Both bases' (WebSocketHandler's does not call on): the socket's end, the in-flight count.
        tornado.websocket.WebSocketHandler.on_connection_close(self)
        ApiHandler.on_connection_close(self)
        subscriber = self.subscriber
        if subscriber is not None:
            subscriber.close("gone")  # wakes the SSE loop, which releases it

    # ---- WebSocket ------------------------------------------------------------------------

    @property
    @override
    def ping_interval(self) -> float:
        return HEARTBEAT_SECONDS

    @property
    @override
    def max_message_size(self) -> int:
        return 4096  # clients have nothing to say but control frames

    @override
    def check_origin(self, origin: str) -> bool:
        # Browsers send Origin on every WebSocket: the page must be the API's own or one
        # allowed by CORS_ORIGINS (a token in the query could otherwise be used cross-site).
        return super().check_origin(origin) or CorsPolicy(self.ctx.settings.cors_origins).allows(
            origin.rstrip("/")
        )

    @override
    def open(self, *args: str, **kwargs: str) -> None:
        metrics.STREAM_CONNECTIONS.labels("websocket").inc()
        self._opened = True
        self._sender = asyncio.ensure_future(self._send_messages())

    async def _send_messages(self) -> None:
        try:
            await self._send_frame(self._ready())
            while True:
                message = await self._next()
                if message is None:
                    continue  # tornado pings on its own (ping_interval)
                if message is END:
                    await self._send_frame(self._closing())
                    break
                await self._send_frame(message)
                metrics.STREAM_MESSAGES.inc()
        except (tornado.websocket.WebSocketClosedError, TimeoutError):
            pass
        reason = self.subscriber.closed if self.subscriber is not None else None
        self.close(CLOSE_CODES.get(reason or "", 1000), reason)

    async def _send_frame(self, message: bytes) -> None:
        async with self._write_deadline():
            await self.write_message(message.decode())

    @override
    def on_message(self, message: str | bytes) -> None:
        pass  # the subscription is the URL's; nothing is read from the client

    @override
    def on_close(self) -> None:
        if not self._opened:
            return  # an SSE stream, or a client gone before the handshake completed
        self._opened = False
        metrics.STREAM_CONNECTIONS.labels("websocket").dec()
        sender, self._sender = self._sender, None
        if sender is not None and not sender.done():
            sender.cancel()
        self._release()


routes = [(r"/api/v1/stream/?", StreamHandler)]
