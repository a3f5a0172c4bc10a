"""Fast HTTP/1.1 server for an unchanged ``tornado.web.Application``.

Why this exists
---------------
Tornado's ``HTTP1Connection`` parses requests in pure Python on top of
``IOStream`` and runs one coroutine per request. For small JSON requests that
overhead, not the handler, is what bounds the gateway's throughput. This
module replaces only the transport layer: an ``asyncio.Protocol`` that parses
with ``httptools`` (llhttp, in C) and implements ``tornado.httputil.HTTPConnection``
so that ``tornado.web.Application`` -- routing, ``RequestHandler``, error
pages, ``Date``/``Server``/``Etag`` headers -- works unchanged. Parsing is
driven from ``data_received`` without any per-request task, futures handed
back by ``write()`` are one shared, already-completed future unless the
socket is backed up, and response heads are built with a single join and
handed straight to ``transport.write``.

Behaviour follows ``tornado.http1connection``: keep-alive (HTTP/1.1 by
default, HTTP/1.0 with ``Connection: keep-alive``), pipelining (requests
are answered strictly in order; requests parsed ahead are buffered and
reading pauses once too much is buffered), chunked request bodies (the
decoded body reaches the delegate), ``Expect: 100-continue``, ``Content-Length``
or chunked response framing (HEAD, 204 and 304 responses carry no body),
``on_connection_close`` / the handler's close callback when the client goes
away, and write flow control (``write()`` futures resolve only once the
transport buffer has drained below its high-water mark).

What it refuses
---------------
Every refusal is answered with ``application/problem+json`` and
``Connection: close``, after which the connection is closed.

* 400 -- anything llhttp rejects in strict mode (bare LF line endings,
  obs-fold, invalid header names or values, bad chunk framing, methods
  llhttp does not know) and the request-smuggling shapes that it does not
  reject on its own or that we refuse on principle: ``Content-Length``
  together with ``Transfer-Encoding``; more than one ``Content-Length``
  header, even with equal values; a ``Content-Length`` that is not plain
  digits; ``Transfer-Encoding`` other than exactly one header whose value is
  the single token ``chunked`` (case-insensitive, no list, no stray
  whitespace); ``Transfer-Encoding`` on HTTP/1.0; an ``Upgrade`` request
  that carries a body; a request the application rejects with
  ``HTTPInputError`` (e.g. a missing or repeated ``Host``).
* 413 -- a body larger than ``max_body_size`` (checked against
  ``Content-Length`` before any body is read and against the running total of
  a chunked body).
* 431 -- a request line plus headers larger than ``max_header_size``.
* 505 -- protocol versions other than HTTP/1.0 and HTTP/1.1.

Connections are closed without an answer when the headers take longer than
``header_timeout``, the body longer than ``body_timeout``, a keep-alive
connection stays idle for ``idle_connection_timeout``, or a client stops
reading a response for ``idle_connection_timeout``; a new connection that
has not begun a request is held to ``header_timeout``. Deadlines are checked by
one periodic sweep per server (every ``min(timeouts) / 4``, at most 1 s), so
no timer is armed or cancelled per request; a timeout fires up to one sweep
interval late.

WebSockets: a request with ``Upgrade: websocket`` is the last one parsed on
its connection (what follows it is not HTTP). Answered with ``101``, the head
is written as the application built it and ``detach()`` hands the socket to
a ``tornado.iostream.IOStream`` (tornado's ``WebSocketHandler`` calls it right
after the 101): the socket is duplicated, the asyncio transport closes its own
descriptor, and the duplicate carries the connection on. Answered otherwise,
the connection closes after the answer. Other upgrades (``h2c``) are served as
ordinary requests and the connection stays HTTP/1.1.

Not supported: ``X-Forwarded-For``/xheaders (the application handles trusted
proxies), ``Content-Encoding: gzip`` request decompression, TLS.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools
from tornado import httputil, iostream
from tornado.log import app_log, gen_log

from server.http.headers import FAST_LAYOUT, RequestHeaders

__all__ = ["FastHTTPConnection", "FastHTTPServer"]

_HTTP11 = "HTTP/1.1"
_HTTP10 = "HTTP/1.0"
_VERSIONS = {"1.1": _HTTP11, "1.0": _HTTP10}

_METHODS: dict[bytes, str] = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
}

# Header names we look at ourselves; compared against the normalised name.
_CONTENT_LENGTH = "Content-Length"
_TRANSFER_ENCODING = "Transfer-Encoding"
_CONNECTION = "Connection"
_EXPECT = "Expect"
_SPECIAL = frozenset((_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT))

# Raw header name -> ``Http-Header-Case`` name (what tornado's HTTPHeaders
# uses). Bounded so a client cannot grow it without limit.
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 2048


def _normalize_name(raw: bytes) -> str:
    name = "-".join([w.capitalize() for w in raw.decode("latin-1").split("-")])
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[raw] = name
    return name


for _n in (
    "Host",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Connection",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Expect",
    "Cookie",
    "Authorization",
    "Cache-Control",
    "If-None-Match",
    "If-Modified-Since",
    "Origin",
    "Referer",
    "Upgrade",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Real-Ip",
    "X-Request-Id",
):
    for _v in (_n, _n.lower(), _n.upper()):
        _NAMES[_v.encode()] = _n


_FAST_HEADERS = FAST_LAYOUT

_TITLES = {
    400: "Bad Request",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}

# code -> (default reason, encoded status line)
_STATUS_LINES: dict[int, tuple[str, bytes]] = {
    code: (reason, f"HTTP/1.1 {code} {reason}\r\n".encode("latin-1"))
    for code, reason in httputil.responses.items()
}

_HTTPHeaders = RequestHeaders
_new_headers = object.__new__
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_END_HEAD = b"\r\n\r\n"

# Request bytes parsed ahead of the request being served (pipelined requests,
# or body chunks a busy streaming delegate has not taken yet) before reading
# from the socket pauses.
_READ_HIGH = 256 * 1024
_READ_LOW = 64 * 1024
_MAX_QUEUED = 16
_SLICE = 4096
# After a refusal or a ``Connection: close`` response we half-close and keep
# reading (discarding) for a moment so unread request bytes do not turn the
# close into a RST that destroys the response in flight ("lingering close").
_LINGER_SECONDS = 2.0
_DISCARD_MAX = 1 << 20

# Deadline kinds, see FastHTTPConnection._update_deadline.
_P_NONE = 0
_P_IDLE = 1
_P_HEADER = 2
_P_BODY = 3
_P_WRITE = 4
_P_LINGER = 5


class _Reject(Exception):
    """Raised from parser callbacks: refuse the request with ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _StopParsing(Exception):
    """Raised from parser callbacks to stop llhttp; nothing more is parsed."""


def _problem(status: int, detail: str) -> bytes:
    title = _TITLES.get(status) or httputil.responses.get(status, "Error")
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


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


class _Message:
    """One parsed request: served now, or queued behind the one being served."""

    __slots__ = (
        "chunked",
        "chunks",
        "complete",
        "content_length",
        "error",
        "expect_continue",
        "headers",
        "http11",
        "keep_alive",
        "method",
        "received",
        "start_line",
        "websocket",
    )

    def __init__(
        self,
        start_line: httputil.RequestStartLine | None,
        headers: httputil.HTTPHeaders | None,
        method: str,
        http11: bool,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        expect_continue: bool,
    ) -> None:
        self.start_line = start_line
        self.headers = headers
        self.method = method
        self.http11 = http11
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.received = 0
        self.chunks: list[bytes] = []
        self.complete = False
        self.error: tuple[int, str] | None = None
        self.websocket = False  # an `Upgrade: websocket` request: the connection's last


def _error_marker(status: int, detail: str) -> _Message:
    msg = _Message(None, None, "", True, False, None, False, False)
    msg.error = (status, detail)
    return msg


class FastHTTPConnection(asyncio.Protocol, httputil.HTTPConnection):
    """One client connection: llhttp parser + tornado ``HTTPConnection``.

    The same object is passed to the application as the ``HTTPConnection`` of
    every request on the connection; requests are served one at a time, in
    order, so "the current request" is always well defined.
    """

    transport: asyncio.Transport
    context: _Context

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
        self._parsing: _Message | None = None  # headers done, message not complete
        self._in_headers = False
        self._began_now = False
        self._hsize = 0
        self._raw_hdr = 0
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        # the request being served
        self._active: _Message | None = None
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
        self._queue: deque[_Message] = deque()
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
        self._phase = _P_NONE
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

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_deadline()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        if self._finish_deferred:
            self._finish_deferred = False
            self._request_done()
        self._update_deadline()

    def data_received(self, data: bytes) -> None:
        if self._discard:
            self._discarded += len(data)
            if self._discarded > _DISCARD_MAX:
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
        if n <= _SLICE:
            self._feed_slice(data)
        else:
            # Large inputs go in slices so that a flood of tiny pipelined
            # requests stops being parsed once enough are queued; the rest
            # waits, unparsed, until the queue drains.
            view = memoryview(data)
            pos = 0
            while pos < n and not self._discard:
                if len(self._queue) >= _MAX_QUEUED or self._buffered > _READ_HIGH:
                    self._stash = bytes(view[pos:])
                    break
                step = _SLICE
                msg = self._parsing
                if msg is not None and msg.content_length:
                    # inside a body of known length: hand it over in one piece
                    step = max(step, msg.content_length - msg.received)
                self._feed_slice(view[pos : pos + step])
                pos += step
        if (
            not self._read_paused
            and not self._discard
            and (self._stash or self._buffered > _READ_HIGH or len(self._queue) >= _MAX_QUEUED)
        ):
            self._pause_reading()
        self._update_deadline()

    def _feed_slice(self, data: bytes | memoryview) -> None:
        self._began_now = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            ctx = e.__context__
            if isinstance(ctx, _Reject):
                self._reject(ctx.status, ctx.detail)
            elif not isinstance(ctx, _StopParsing):
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
            raise _Reject(431, f"request headers exceed {self._max_header} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hsize += len(name) + len(value) + 4
        if self._hsize > self._max_header:
            raise _Reject(431, f"request headers exceed {self._max_header} bytes")
        if self._in_headers:
            self._raw_headers.append((name, value))
        # else: a chunked trailer field; counted above, otherwise ignored.

    def on_headers_complete(self) -> None:
        self._in_headers = False
        parser = self._parser
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise _Reject(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        http11 = version is _HTTP11
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
        fast = _FAST_HEADERS
        headers: httputil.HTTPHeaders
        if fast:
            headers = _new_headers(_HTTPHeaders)
            as_list: dict[str, list[str]] = {}
            combined: dict[str, str] = {}
        else:
            headers = httputil.HTTPHeaders()
        cl_raw: bytes | None = None
        chunked = False
        conn: bytes | None = None
        expect = False
        names = _NAMES
        for raw_name, raw_value in self._raw_headers:
            name = names.get(raw_name) or _normalize_name(raw_name)
            if name in _SPECIAL:
                if name == _CONTENT_LENGTH:
                    # Refuse a second Content-Length even if it repeats the
                    # same value: RFC 9112 lets a recipient merge equal
                    # values, but a front proxy might not have, and any
                    # disagreement about framing is a smuggling vector.
                    if cl_raw is not None:
                        raise _Reject(400, "multiple Content-Length headers")
                    if not raw_value.isdigit():
                        raise _Reject(400, "invalid Content-Length")
                    cl_raw = raw_value
                elif name == _TRANSFER_ENCODING:
                    if chunked:
                        raise _Reject(400, "multiple Transfer-Encoding headers")
                    # Token-exact: no lists ("chunked, identity"), no other
                    # codings, no trailing whitespace llhttp leaves in place.
                    if raw_value.lower() != b"chunked":
                        raise _Reject(400, "unsupported Transfer-Encoding")
                    chunked = True
                elif name == _CONNECTION:
                    conn = raw_value if conn is None else conn + b"," + raw_value
                elif name == _EXPECT:
                    expect = raw_value.lower() == b"100-continue"
            value = raw_value.decode("latin-1")
            if value and value[-1] in " \t":
                value = value.rstrip(" \t")
            if fast:
                values = as_list.get(name)
                if values is None:
                    as_list[name] = [value]
                    combined[name] = value
                else:
                    values.append(value)
                    combined.pop(name, None)
            elif name in headers:
                headers.add(name, value)
            else:
                headers[name] = value
        if fast:
            headers._as_list = as_list
            headers._combined_cache = combined
        self._raw_headers.clear()
        if chunked:
            if cl_raw is not None:
                raise _Reject(400, "both Content-Length and Transfer-Encoding")
            if not http11:
                raise _Reject(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        content_length = int(cl_raw) if cl_raw is not None else None
        if conn is None:
            keep_alive = http11
        else:
            tokens = {t.strip() for t in conn.lower().split(b",")}
            if http11:
                keep_alive = b"close" not in tokens
            else:
                # tornado's rule: HTTP/1.0 keep-alive needs a delimited body
                keep_alive = b"keep-alive" in tokens and (
                    content_length is not None or method in ("GET", "HEAD")
                )
        if parser.should_upgrade():
            if method == "CONNECT":
                keep_alive = False
            elif chunked or content_length:
                raise _Reject(400, "a request body with Upgrade is not supported")
        msg = _Message(
            httputil.RequestStartLine(method, self._url.decode("latin-1"), version),
            headers,
            method,
            http11,
            keep_alive,
            content_length,
            chunked,
            expect,
        )
        if parser.should_upgrade() and method != "CONNECT":
            msg.websocket = headers.get("Upgrade", "").strip().lower() == "websocket"
        self._parsing = msg
        if self._active is None and not self._queue and not self._activation_scheduled:
            self._activate(msg)
            if self._discard:
                raise _StopParsing
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
                raise _Reject(413, f"request body exceeds {limit} bytes")
        if msg is self._active and not self._busy and not msg.chunks:
            if self._delegate_open and not self._resp_finished:
                self._deliver_data(body)
        else:
            msg.chunks.append(body)
            self._buffered += len(body)
        if self._discard:
            raise _StopParsing

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
            raise _StopParsing

    # ------------------------------------------------------------------
    # delivering a request to the application

    def _activate(self, msg: _Message) -> None:
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
            self.transport.write(_CONTINUE)
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
            self._queue.append(_error_marker(status, detail))
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
        self.transport.write(_problem(status, detail))
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
        self._phase = _P_LINGER
        self._deadline = self._loop.time() + _LINGER_SECONDS

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
    # flow control and deadlines

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            not self._read_paused
            or self._closed
            or self._buffered > _READ_LOW
            or len(self._queue) >= _MAX_QUEUED // 2
            or (self._discard and self._discarded > _DISCARD_MAX)
        ):
            return
        if self._stash:
            # Never feed the parser from here: we may be inside one of its
            # callbacks.
            if not self._stash_scheduled:
                self._stash_scheduled = True
                self._loop.call_soon(self._feed_stash)
            return
        self._read_paused = False
        self.transport.resume_reading()
        self._phase = _P_NONE  # restart the clock for the client
        self._update_deadline()

    def _feed_stash(self) -> None:
        self._stash_scheduled = False
        data, self._stash = self._stash, b""
        if self._closed or self._discard or not data:
            return
        self._feed(data)
        self._maybe_resume_reading()

    def _update_deadline(self) -> None:
        if self._lingering or self._closed:
            return
        if self._write_paused:
            phase = _P_WRITE
        elif self._in_headers:
            phase = _P_HEADER
        elif self._parsing is not None:
            phase = _P_BODY
        elif self._active is None and not self._queue:
            phase = _P_HEADER if self._fresh else _P_IDLE
        else:
            phase = _P_NONE
        if phase == self._phase:
            return
        self._phase = phase
        server = self._server
        timeout: float | None
        if phase == _P_IDLE or phase == _P_WRITE:
            timeout = server.idle_connection_timeout
        elif phase == _P_HEADER:
            timeout = server.header_timeout
        elif phase == _P_BODY:
            timeout = self._body_timeout if self._parsing is self._active else server.body_timeout
        else:
            timeout = None
        self._deadline = self._loop.time() + timeout if timeout else 0.0

    def _check_deadline(self, now: float) -> None:
        phase = self._phase
        if self._closed or not self._deadline or now < self._deadline:
            return
        if phase == _P_LINGER:
            size = self.transport.get_write_buffer_size()
            if size and size != self._linger_buf:  # still sending the response
                self._linger_buf = size
                self._deadline = now + _LINGER_SECONDS
                return
            self.transport.abort()
            return
        if self._read_paused and phase in (_P_IDLE, _P_HEADER, _P_BODY):
            return  # we stopped reading; the client is not to blame
        if phase == _P_WRITE:
            gen_log.info("Closing %s: client stopped reading the response", self.context)
            self._abort()
        elif phase == _P_BODY:
            gen_log.info("Timeout reading body from %s", self.context)
            self._discard = True
            self.transport.close()
        elif phase == _P_HEADER:
            gen_log.info("Timeout reading headers from %s", self.context)
            self._discard = True
            self.transport.close()
        elif phase == _P_IDLE:
            if self._active is not None or self._queue:  # pragma: no cover - defensive
                self._phase = _P_NONE
                self._deadline = 0.0
                return
            self._discard = True
            self.transport.close()

    # ------------------------------------------------------------------
    # tornado.httputil.HTTPConnection

    def _closed_future(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        fut.set_exception(iostream.StreamClosedError())
        fut.exception()
        return fut

    def _write_future(self) -> asyncio.Future[None]:
        if self._write_paused:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(fut)
            return fut
        return self._done

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
        code = start_line.code
        method = msg.method
        if self._draining:
            msg.keep_alive = False
        if _FAST_HEADERS:
            as_list = headers._as_list
            cl_values = as_list.get(_CONTENT_LENGTH)
            cl = None if cl_values is None else ",".join(cl_values)
            conn_values = as_list.get(_CONNECTION)
            app_conn = None if conn_values is None else ",".join(conn_values)
        else:
            cl = headers.get(_CONTENT_LENGTH)
            app_conn = headers.get(_CONNECTION)
        if app_conn is not None and "close" in app_conn.lower():
            msg.keep_alive = False  # the application asked to close
        if msg.websocket:
            if code == 101:
                return self._switch_protocols(start_line, headers)
            msg.keep_alive = False  # a refused handshake: nothing more is read from it
        if method == "HEAD" or code == 304:
            remaining: int | None = 0
        elif cl is not None:
            if not (cl.isascii() and cl.isdigit()):
                raise ValueError(f"invalid Content-Length {cl!r}")
            remaining = int(cl)
        else:
            remaining = None
        bodiless = method == "HEAD" or code == 204 or code == 304 or 100 <= code < 200
        chunked = msg.http11 and not bodiless and cl is None
        if remaining is None and not chunked and not bodiless:
            msg.keep_alive = False  # HTTP/1.0 response delimited by close
        if msg.http11:
            if not msg.keep_alive:
                headers[_CONNECTION] = "close"
        elif msg.keep_alive:
            headers[_CONNECTION] = "Keep-Alive"
        if chunked:
            headers[_TRANSFER_ENCODING] = "chunked"
        entry = _STATUS_LINES.get(code)
        if entry is not None and entry[0] == start_line.reason:
            status = entry[1]
        else:
            line = f"HTTP/1.1 {code} {start_line.reason}"
            if "\r" in line or "\n" in line:
                raise ValueError(f"Illegal characters (CR or LF) in status line: {line!r}")
            status = line.encode("latin-1") + _CRLF
        if _FAST_HEADERS:
            lines = [f"{n}: {v}" for n, values in headers._as_list.items() for v in values]
        else:
            lines = [f"{n}: {v}" for n, v in headers.get_all()]
        if lines:
            block = "\r\n".join(lines)
            seps = len(lines) - 1
            if block.count("\r") != seps or block.count("\n") != seps:
                raise ValueError(f"Illegal characters (CR or LF) in headers: {block!r}")
            head = b"".join((status, block.encode("latin-1"), _END_HEAD))
        else:
            head = status + _CRLF
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
        """The 101 of a WebSocket handshake, written as built (its Connection: Upgrade stays);
        the socket then waits for detach()."""
        lines = [f"HTTP/1.1 101 {start_line.reason}", *(f"{n}: {v}" for n, v in headers.get_all())]
        block = "\r\n".join(lines)
        if block.count("\r") != len(lines) - 1 or block.count("\n") != len(lines) - 1:
            raise ValueError("Illegal characters (CR or LF) in the 101 response")
        self._resp_started = True
        self._switching = True
        self._remaining = 0
        self.transport.write(block.encode("latin-1") + _END_HEAD)
        return self._write_future()

    def _frame(self, chunk: bytes) -> bytes:
        if self._remaining is not None:
            self._remaining -= len(chunk)
            if self._remaining < 0:
                self._abort()
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        if self._chunked_out and chunk:
            return b"".join((b"%x\r\n" % len(chunk), chunk, _CRLF))
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
            self.transport.write(_LAST_CHUNK)
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


class FastHTTPServer:
    """Serves a ``tornado.httputil.HTTPServerConnectionDelegate`` (usually a
    ``tornado.web.Application``) with ``FastHTTPConnection``."""

    def __init__(
        self,
        delegate: httputil.HTTPServerConnectionDelegate,
        *,
        max_body_size: int = 1 << 20,
        max_header_size: int = 64 * 1024,
        idle_connection_timeout: float = 60.0,
        body_timeout: float | None = 60.0,
        header_timeout: float = 10.0,
    ) -> None:
        self.delegate = delegate
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size
        self.idle_connection_timeout = idle_connection_timeout
        self.body_timeout = body_timeout
        self.header_timeout = header_timeout
        self._servers: list[asyncio.Server] = []
        self._connections: set[FastHTTPConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty: asyncio.Event | None = None
        timeouts = [t for t in (idle_connection_timeout, body_timeout, header_timeout) if t]
        self._sweep_interval = min(1.0, max(0.02, min(timeouts, default=4.0) / 4))

    async def listen(
        self,
        port: int,
        host: str = "",
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        backlog: int = 1024,
    ) -> None:
        """Start accepting connections on ``host:port`` (or on ``sock``)."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            self._done = done
        elif self._loop is not loop:
            raise RuntimeError("FastHTTPServer is bound to another event loop")
        if sock is not None:
            server = await loop.create_server(self._make_protocol, sock=sock, backlog=backlog)
        else:
            server = await loop.create_server(
                self._make_protocol,
                host or None,
                port,
                reuse_port=reuse_port or None,
                backlog=backlog,
            )
        self._servers.append(server)
        self._ensure_sweeper()

    def _make_protocol(self) -> FastHTTPConnection:
        return FastHTTPConnection(self)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """Listening sockets of every ``listen()`` call still serving."""
        socks: list[socket.socket] = []
        for server in self._servers:
            socks.extend(cast(Any, server.sockets) or ())
        return tuple(socks)

    @property
    def port(self) -> int:
        """Port of the first listening socket (handy after ``listen(0)``)."""
        return int(self.sockets[0].getsockname()[1])

    @property
    def connections(self) -> frozenset[FastHTTPConnection]:
        return frozenset(self._connections)

    def stop(self) -> None:
        """Stop accepting new connections; open connections are untouched."""
        for server in self._servers:
            server.close()

    async def close_all_connections(self, timeout: float) -> None:  # noqa: ASYNC109
        """Graceful drain.

        Idle keep-alive connections close at once; a connection with a request
        in flight finishes that request (its response says ``Connection:
        close``) and then closes. Whatever is still open after ``timeout``
        seconds is aborted.
        """
        empty = self._empty = asyncio.Event()
        if not self._connections:
            empty.set()
        for conn in list(self._connections):
            conn._start_drain()
        try:
            await asyncio.wait_for(empty.wait(), timeout)
        except TimeoutError:
            gen_log.info("Aborting %d connections after drain", len(self._connections))
            for conn in list(self._connections):
                conn._abort()
            try:  # connection_lost runs on the next loop iterations
                await asyncio.wait_for(empty.wait(), 1.0)
            except TimeoutError:
                pass
        self._empty = None
        if not any(s.is_serving() for s in self._servers):
            for server in self._servers:
                await server.wait_closed()
            self._servers.clear()
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None

    # ------------------------------------------------------------------

    def _connection_made(self, conn: FastHTTPConnection) -> None:
        self._connections.add(conn)
        if self._empty is not None:  # draining: do not start new requests
            conn._start_drain()
        self._ensure_sweeper()

    def _connection_lost(self, conn: FastHTTPConnection) -> None:
        self._connections.discard(conn)
        if not self._connections and self._empty is not None:
            self._empty.set()

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None and self._loop is not None:
            self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for conn in list(self._connections):
            if conn._deadline:
                try:
                    conn._check_deadline(now)
                except Exception:  # pragma: no cover - defensive
                    gen_log.error("Error checking connection deadline", exc_info=True)
        if self._connections or any(s.is_serving() for s in self._servers):
            self._ensure_sweeper()
