"""One client connection of the fast server: the sequencing of requests on it.

httptools (llhttp) drives the parser callbacks from ``data_received``; the head is read by
server/http/fast/parser.py, the answer framed by framing.py, buffering bounded by flow.py and
timeouts kept by deadlines.py. What remains here is the order of things: one request served at a
time while later ones queue, the body handed to the delegate as it asks for it, refusals answered
in turn, and the close (lingering, drain, or the hand-over of a WebSocket in ``detach()``).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import httptools
from tornado import httputil, iostream
from tornado.log import app_log, gen_log

from server.http.fast import deadlines, framing
from server.http.fast.deadlines import Deadlines
from server.http.fast.flow import DISCARD_MAX, MAX_QUEUED, READ_HIGH, SLICE, FlowControl
from server.http.fast.parser import Message, Reject, StopParsing, error_marker, parse_head

if TYPE_CHECKING:
    from server.http.fast.server import FastHTTPServer

__all__ = ["FastHTTPConnection"]


class _Context:
    """``connection.context`` as ``HTTPServerRequest`` expects it."""

    __slots__ = ("address", "address_family", "protocol", "remote_ip")

    def __init__(self, address: Any, family: int | None, protocol: str) -> None:
        self.address = address
        self.address_family = family
        if family in (socket.AF_INET, socket.AF_INET6) and address:
            self.remote_ip: str = address[0]
        else:
            self.remote_ip = "0.0.0.0"
        self.protocol = protocol

    def __str__(self) -> str:
        if self.address_family in (socket.AF_INET, socket.AF_INET6):
            return self.remote_ip
        return str(self.address)


class FastHTTPConnection(FlowControl, Deadlines, asyncio.Protocol, httputil.HTTPConnection):
    """One client connection: llhttp parser + tornado ``HTTPConnection``.

    The same object is passed to the application as the ``HTTPConnection`` of
    every request on the connection; requests are served one at a time, in
    order, so "the current request" is always well defined.
    """

    transport: asyncio.Transport
    context: _Context
    _server: FastHTTPServer

    def __init__(self, server: FastHTTPServer) -> None:
        self._server = server
        self._app = server.delegate
        loop = server._loop
        assert loop is not None and server._done is not None
        self._loop = loop
        self._done = server._done
        self._max_header = server.max_header_size
        self._parser = httptools.HttpRequestParser(self)
        # parsing state
        self._parsing: Message | None = None  # headers done, message not complete
        self._in_headers = False
        self._began_now = False
        self._hsize = 0
        self._raw_hdr = 0
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        # the request being served
        self._active: Message | None = None
        self._delegate: httputil.HTTPMessageDelegate | None = None
        self._delegate_open = False  # headers_received delivered, finish() not yet
        self._busy = False  # waiting for a future returned by the delegate
        self._hdr_wait = False  # ... and that future came from headers_received
        self._resp_started = False
        self._resp_finished = False
        self._finish_deferred = False
        self._chunked_out = False
        self._remaining: int | None = None
        self._close_cb: Callable[[], None] | None = None
        self._max_body = server.max_body_size
        self._body_timeout = server.body_timeout
        # pipelined requests parsed ahead
        self._queue: deque[Message] = deque()
        self._stash = b""  # received but not yet parsed (queue full)
        self._stash_scheduled = False
        self._activation_scheduled = False
        self._buffered = 0
        # flow control and lifecycle
        self._read_paused = False
        self._write_paused = False
        self._waiters: list[asyncio.Future[None]] = []
        self._discard = False  # nothing more is parsed from this connection
        self._discarded = 0
        self._lingering = False
        self._linger_buf = -1
        self._closed = False
        self._draining = False
        self._phase = deadlines.NONE
        self._deadline = 0.0
        # A 101 was written: the socket waits for detach() (WebSocket)
        self._switching = False
        self._detached = False
        # No request has begun yet: a connection that says nothing gets the header deadline,
        # not the keep-alive idle one (10 000 silent sockets must not be held for a minute).
        self._fresh = True

    # ------------------------------------------------------------------
    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        family = sock.family if sock is not None else None
        self.context = _Context(transport.get_extra_info("peername"), family, "http")
        self._server._connection_made(self)
        self._update_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._discard = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(iostream.StreamClosedError(real_error=exc))
                fut.exception()  # mark retrieved, as tornado's IOStream does
        delegate, self._delegate = self._delegate, None
        close_cb, self._close_cb = self._close_cb, None
        self._active = None
        self._parsing = None
        self._queue.clear()
        # Like HTTP1Connection: a delegate still receiving the request hears
        # on_connection_close(); once the request has been read, the
        # handler's close callback is what reports the disconnect.
        if delegate is not None and self._delegate_open:
            self._delegate_open = False
            try:
                delegate.on_connection_close()
            except Exception:
                app_log.error("Uncaught exception in on_connection_close", exc_info=True)
        elif close_cb is not None:
            try:
                close_cb()
            except Exception:
                app_log.error("Uncaught exception in close callback", exc_info=True)
        try:
            self._app.on_close(self)
        except Exception:
            app_log.error("Uncaught exception in on_close", exc_info=True)
        self._server._connection_lost(self)

    def eof_received(self) -> bool | None:
        # Like IOStream: EOF from the client closes the connection (which is
        # how a disconnect mid-request is noticed).
        return None

    def data_received(self, data: bytes) -> None:
        if self._discard:
            self._discarded += len(data)
            if self._discarded > DISCARD_MAX:
                if self._lingering:
                    self.transport.abort()
                else:
                    self._pause_reading()
            return
        if self._stash:  # reading is paused; only reachable with a lagging transport
            self._stash += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        n = len(data)
        if n <= SLICE:
            self._feed_slice(data)
        else:
            # Large inputs go in slices so that a flood of tiny pipelined
            # requests stops being parsed once enough are queued; the rest
            # waits, unparsed, until the queue drains.
            view = memoryview(data)
            pos = 0
            while pos < n and not self._discard:
                if len(self._queue) >= MAX_QUEUED or self._buffered > READ_HIGH:
                    self._stash = bytes(view[pos:])
                    break
                step = SLICE
                msg = self._parsing
                if msg is not None and msg.content_length:
                    # inside a body of known length: hand it over in one piece
                    step = max(step, msg.content_length - msg.received)
                self._feed_slice(view[pos : pos + step])
                pos += step
        if (
            not self._read_paused
            and not self._discard
            and (self._stash or self._buffered > READ_HIGH or len(self._queue) >= MAX_QUEUED)
        ):
            self._pause_reading()
        self._update_deadline()

    def _feed_slice(self, data: bytes | memoryview) -> None:
        self._began_now = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            ctx = e.__context__
            if isinstance(ctx, Reject):
                self._reject(ctx.status, ctx.detail)
            elif not isinstance(ctx, StopParsing):
                gen_log.error("Error while parsing request from %s", self.context, exc_info=ctx)
                self._abort()
            return
        except httptools.HttpParserUpgrade as e:
            # Upgrade requests (no body) are served as plain requests;
            # CONNECT is served and the tunnel bytes after it are ignored.
            if not self._discard:
                rest = data[e.args[0] :]
                if rest:
                    self._feed_slice(rest)
            return
        except httptools.HttpParserError as e:
            self._reject(400, str(e) or "malformed request")
            return
        if self._in_headers and not self._began_now and not self._discard:
            # Backstop for a single huge header line that never ends: the
            # per-header accounting only sees complete headers.
            self._raw_hdr += len(data)
            if self._raw_hdr > self._max_header:
                self._reject(431, f"request headers exceed {self._max_header} bytes")

    # ------------------------------------------------------------------
    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_headers = True
        self._fresh = False
        self._began_now = True
        self._hsize = 0
        self._raw_hdr = 0
        self._url = b""
        self._raw_headers.clear()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._hsize += len(url)
        if self._hsize > self._max_header:
            raise Reject(431, f"request headers exceed {self._max_header} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hsize += len(name) + len(value) + 4
        if self._hsize > self._max_header:
            raise Reject(431, f"request headers exceed {self._max_header} bytes")
        if self._in_headers:
            self._raw_headers.append((name, value))
        # else: a chunked trailer field; counted above, otherwise ignored.

    def on_headers_complete(self) -> None:
        self._in_headers = False
        msg = parse_head(self._parser, self._url, self._raw_headers)
        self._raw_headers.clear()
        self._parsing = msg
        if self._active is None and not self._queue and not self._activation_scheduled:
            self._activate(msg)
            if self._discard:
                raise StopParsing
        else:
            self._queue.append(msg)

    def on_body(self, body: bytes) -> None:
        msg = self._parsing
        if msg is None:  # pragma: no cover - llhttp never does this
            return
        msg.received += len(body)
        if msg.chunked:
            limit = self._max_body if msg is self._active else self._server.max_body_size
            if msg.received > limit:
                raise Reject(413, f"request body exceeds {limit} bytes")
        if msg is self._active and not self._busy and not msg.chunks:
            if self._delegate_open and not self._resp_finished:
                self._deliver_data(body)
        else:
            msg.chunks.append(body)
            self._buffered += len(body)
        if self._discard:
            raise StopParsing

    def on_message_complete(self) -> None:
        msg = self._parsing
        if msg is None:  # pragma: no cover
            return
        self._parsing = None
        msg.complete = True
        if (
            msg is self._active
            and not self._busy
            and not msg.chunks
            and self._delegate_open
            and not self._resp_finished
        ):
            self._deliver_finish()
        if not msg.keep_alive or msg.websocket:
            self._discard = True  # after a WebSocket handshake come frames, not requests
        if self._discard:
            raise StopParsing

    # ------------------------------------------------------------------
    # delivering a request to the application

    def _activate(self, msg: Message) -> None:
        self._active = msg
        self._resp_started = False
        self._resp_finished = False
        self._finish_deferred = False
        self._chunked_out = False
        self._remaining = None
        self._close_cb = None
        self._busy = False
        self._hdr_wait = False
        server = self._server
        self._max_body = server.max_body_size
        self._body_timeout = server.body_timeout
        if self._draining:
            msg.keep_alive = False
        delegate = self._app.start_request(self, self)
        self._delegate = delegate
        self._delegate_open = True
        assert msg.start_line is not None and msg.headers is not None
        try:
            ret = delegate.headers_received(msg.start_line, msg.headers)
        except httputil.HTTPInputError as e:
            self._fail_active(400, str(e))
            return
        except Exception:
            self._delegate_raised()
            return
        if ret is not None:
            self._hdr_wait = True
            self._wait_for(ret)
            return
        self._after_headers()

    def _after_headers(self) -> None:
        msg = self._active
        assert msg is not None
        cl = msg.content_length
        limit = self._max_body
        if (cl is not None and cl > limit) or (msg.chunked and msg.received > limit):
            self._fail_active(413, f"request body exceeds {limit} bytes")
            return
        if (
            msg.expect_continue
            and msg.http11
            and not msg.complete
            and not self._resp_started
            and (msg.chunked or cl)
        ):
            self.transport.write(framing.CONTINUE)
        if msg.chunks or msg.complete:
            self._pump()

    def _pump(self) -> None:
        """Feed buffered body chunks / finish to the delegate, in order."""
        msg = self._active
        while msg is not None and msg is self._active and not self._busy:
            if msg.chunks:
                chunk = msg.chunks.pop(0)
                self._buffered -= len(chunk)
                if self._delegate_open and not self._resp_finished:
                    self._deliver_data(chunk)
            elif msg.complete and self._delegate_open and not self._resp_finished:
                self._deliver_finish()
                break
            else:
                break
        self._maybe_resume_reading()

    def _deliver_data(self, chunk: bytes) -> None:
        delegate = self._delegate
        assert delegate is not None
        try:
            ret = delegate.data_received(chunk)
        except httputil.HTTPInputError as e:
            self._fail_active(400, str(e))
            return
        except Exception:
            self._delegate_raised()
            return
        if ret is not None:
            self._wait_for(ret)

    def _deliver_finish(self) -> None:
        delegate = self._delegate
        assert delegate is not None
        self._delegate_open = False
        try:
            delegate.finish()
        except httputil.HTTPInputError as e:
            self._delegate_open = True
            self._fail_active(400, str(e))
        except Exception:
            self._delegate_open = True
            self._delegate_raised()

    def _wait_for(self, awaitable: Awaitable[None]) -> None:
        self._busy = True
        fut = asyncio.ensure_future(awaitable)
        fut.add_done_callback(self._delegate_ready)

    def _delegate_ready(self, fut: asyncio.Future[None]) -> None:
        exc: BaseException | None
        exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        if self._closed or self._active is None or not self._busy:
            return
        self._busy = False
        if exc is not None:
            if isinstance(exc, httputil.HTTPInputError):
                self._fail_active(400, str(exc))
            else:
                app_log.error("Uncaught exception", exc_info=exc)
                self._discard = True
                self.transport.close()
            return
        if self._hdr_wait:
            self._hdr_wait = False
            self._after_headers()
        else:
            self._pump()

    def _delegate_raised(self) -> None:
        # As HTTP1Connection's _ExceptionLoggingContext: log, close; the
        # delegate hears on_connection_close() from connection_lost.
        app_log.error("Uncaught exception", exc_info=True)
        self._discard = True
        self.transport.close()

    def _fail_active(self, status: int, detail: str) -> None:
        """Refuse the request being served (after headers_received)."""
        gen_log.info("Refused request from %s: %d %s", self.context, status, detail)
        delegate = self._delegate
        was_open = self._delegate_open
        started = self._resp_started
        self._active = None
        self._delegate = None
        self._delegate_open = False
        self._close_cb = None
        self._busy = False
        self._parsing = None
        self._discard = True
        if was_open and delegate is not None:
            try:
                delegate.on_connection_close()
            except Exception:
                app_log.error("Uncaught exception in on_connection_close", exc_info=True)
        if started:
            self._abort()
        else:
            self._send_problem(status, detail)

    def _reject(self, status: int, detail: str) -> None:
        """Refuse the message being parsed; answer it in turn."""
        gen_log.info("Refused request from %s: %d %s", self.context, status, detail)
        self._discard = True
        self._in_headers = False
        msg, self._parsing = self._parsing, None
        if msg is not None and msg is self._active:
            self._fail_active(status, detail)
            return
        if msg is not None and self._queue and self._queue[-1] is msg:
            self._queue.pop()
            self._buffered -= sum(len(c) for c in msg.chunks)
        if self._active is not None or self._queue:
            self._queue.append(error_marker(status, detail))
        else:
            self._send_problem(status, detail)

    def _request_done(self) -> None:
        msg = self._active
        self._active = None
        self._close_cb = None
        if not self._delegate_open:
            self._delegate = None
        if self._closed or msg is None:
            return
        if not msg.keep_alive or self._draining:
            self._linger_close()
        elif self._queue:
            if not self._activation_scheduled:
                self._activation_scheduled = True
                self._loop.call_soon(self._activate_next)
        elif self._discard:
            self._linger_close()
        else:
            self._update_deadline()

    def _activate_next(self) -> None:
        self._activation_scheduled = False
        if self._closed or self._active is not None or not self._queue:
            return
        msg = self._queue.popleft()
        if msg.error is not None:
            self._send_problem(*msg.error)
            return
        self._activate(msg)
        self._maybe_resume_reading()
        self._update_deadline()

    # ------------------------------------------------------------------
    # closing

    def _send_problem(self, status: int, detail: str) -> None:
        if self._closed or self._lingering:
            return
        headers = self._server.refusal_headers
        self.transport.write(framing.problem(status, detail, headers() if headers else ()))
        self._linger_close()

    def _linger_close(self) -> None:
        if self._closed or self._lingering:
            return
        self._discard = True
        self._lingering = True
        self._parsing = None
        self._queue.clear()
        self._stash = b""
        transport = self.transport
        try:
            if not transport.can_write_eof():
                transport.close()
                return
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.abort()
            return
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        self._start_linger_clock()

    def _abort(self) -> None:
        self._discard = True
        if not self._closed:
            self.transport.abort()

    def _start_drain(self) -> None:
        """Graceful shutdown: finish the request in flight, then close."""
        self._draining = True
        if self._active is None and not self._queue and not self._activation_scheduled:
            self._discard = True
            if not self._closed and not self._lingering:
                self.transport.close()
        elif self._active is not None and not self._resp_started:
            self._active.keep_alive = False

    # ------------------------------------------------------------------
    # tornado.httputil.HTTPConnection

    def _closed_future(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        fut.set_exception(iostream.StreamClosedError())
        fut.exception()
        return fut

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        msg = self._active
        if msg is None or self._closed or self._resp_started:
            return self._closed_future()
        assert isinstance(start_line, httputil.ResponseStartLine)
        if self._draining:
            msg.keep_alive = False
        if msg.websocket:
            if start_line.code == 101:
                return self._switch_protocols(start_line, headers)
            msg.keep_alive = False  # a refused handshake: nothing more is read from it
        head, chunked, remaining = framing.response_head(msg, start_line, headers)
        self._resp_started = True
        self._chunked_out = chunked
        self._remaining = remaining
        if chunk:
            head += self._frame(chunk)
        self.transport.write(head)
        return self._write_future()

    def _switch_protocols(
        self, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> asyncio.Future[None]:
        """The 101 of a WebSocket handshake; the socket then waits for detach()."""
        head = framing.switch_head(start_line, headers)
        self._resp_started = True
        self._switching = True
        self._remaining = 0
        self.transport.write(head)
        return self._write_future()

    def _frame(self, chunk: bytes) -> bytes:
        if self._remaining is not None:
            self._remaining -= len(chunk)
            if self._remaining < 0:
                self._abort()
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        if self._chunked_out and chunk:
            return framing.chunk_frame(chunk)
        return chunk

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if self._active is None or self._closed or not self._resp_started:
            return self._closed_future()
        data = self._frame(chunk)
        if data:
            self.transport.write(data)
        return self._write_future()

    def finish(self) -> None:
        msg = self._active
        if msg is None or self._closed or self._resp_finished:
            return
        if self._remaining:
            self._abort()
            raise httputil.HTTPOutputError(
                f"Tried to write {self._remaining} bytes less than Content-Length"
            )
        if self._switching:
            self._resp_finished = True
            self._close_cb = None
            # detach() comes next, in the same call stack; if it does not, nobody speaks here.
            self._loop.call_soon(self._unclaimed_switch)
            return
        if self._chunked_out:
            self.transport.write(framing.LAST_CHUNK)
        self._resp_finished = True
        self._close_cb = None
        if self._delegate_open:
            # The application answered before reading the whole body; the
            # only way not to read the rest is to close (as tornado does).
            msg.keep_alive = False
        if self._write_paused:
            self._finish_deferred = True
            return
        self._request_done()

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_cb = callback

    def set_max_body_size(self, max_body_size: int) -> None:
        self._max_body = max_body_size

    def set_body_timeout(self, timeout: float) -> None:
        self._body_timeout = timeout

    def detach(self) -> iostream.IOStream:
        """Hand the connection over after a 101: an ``IOStream`` on a duplicate of the socket.

        The transport is aborted, which closes only its own descriptor; the duplicate keeps the
        TCP connection. Nothing the client sent after the handshake is lost: the transport read
        only up to the end of the upgrade request before the 101 (a client speaks WebSocket only
        after it), and the rest is still in the kernel for the stream to read. Should the 101
        still sit in the transport's buffer (a client not reading earlier pipelined answers), it
        cannot be handed on: the connection closes and the stream comes back closed.
        """
        transport = self.transport
        sock = transport.get_extra_info("socket")
        if not self._switching or self._detached or self._closed or sock is None:
            raise RuntimeError("detach() needs a connection that has just written a 101")
        self._detached = True
        self._discard = True
        unsent = transport.get_write_buffer_size() > 0
        duplicate = sock.dup()
        transport.abort()
        stream = iostream.IOStream(duplicate)
        if unsent:
            stream.close()
        return stream

    def _unclaimed_switch(self) -> None:
        if not self._detached:
            self._abort()
