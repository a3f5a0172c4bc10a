"""Refusals as problem+json on Tornado's stock HTTP server: 413 for oversized bodies, 400 for
requests Tornado refuses before any handler runs.

Tornado's `HTTP1Connection` answers a `Content-Length` above `max_body_size` with a bare
`400 Bad Request` and drops the connection. Here such a request is let through with its body
read and thrown away (up to `DRAIN_FACTOR` times the limit, so a client that sends the body
before reading the answer still gets one), and `ApiHandler.prepare` answers 413 problem+json
from the declared length. Nothing of the body is kept in memory. Beyond the drain allowance,
and for chunked bodies, Tornado's own 400 stays. The fast server answers 413 by itself.

A request whose head Tornado's request object refuses (`HTTPInputError`: an invalid, missing or
repeated `Host`) is answered by `HTTP1Connection` with a bare `400 Bad Request` and no body. Here
it gets the fast server's answer instead: its body is read as any other and thrown away, then a
problem+json 400 closes the connection.
"""

from __future__ import annotations

from collections.abc import Awaitable

import tornado.web
from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.log import gen_log
from typing_extensions import override

from server.http.fast import framing

DRAIN_FACTOR = 16


def declared_length(headers: httputil.HTTPHeaders) -> int | None:
    """The request's Content-Length when it is a plain decimal number, else None (Tornado's
    connection refuses any other value itself). `str.isdigit` alone also takes "²" and other
    Unicode digits, which `int` then refuses."""
    declared = headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and len(declared) <= 19:
        return int(declared)
    return None


class _OversizeBodyDrain(httputil.HTTPMessageDelegate):
    def __init__(
        self, inner: httputil.HTTPMessageDelegate, connection: HTTP1Connection, limit: int
    ) -> None:
        self.inner = inner
        self.connection = connection
        self.limit = limit
        self.discarding = False
        self.refused: str | None = None  # why the request's head was refused

    @override
    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        declared = declared_length(headers)
        if declared is not None and self.limit < declared <= self.limit * DRAIN_FACTOR:
            self.discarding = True
            self.connection.set_max_body_size(declared)
        try:
            return self.inner.headers_received(start_line, headers)
        except httputil.HTTPInputError as exc:
            # The inner delegate holds no request now: it hears nothing more of this one.
            gen_log.info("Refused request from %s: 400 %s", self.connection.context, exc)
            self.refused = str(exc)
            return None

    @override
    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.discarding or self.refused is not None:
            return None
        return self.inner.data_received(chunk)

    @override
    def finish(self) -> None:
        if self.refused is not None:
            self._refuse(self.refused)
            return
        self.inner.finish()

    @override
    def on_connection_close(self) -> None:
        if self.refused is None:
            self.inner.on_connection_close()

    def _refuse(self, detail: str) -> None:
        body = framing.problem_body(400, detail)
        headers = httputil.HTTPHeaders(
            {
                "Content-Type": "application/problem+json",
                "Content-Length": str(len(body)),
                "Connection": "close",
            }
        )
        start = httputil.ResponseStartLine("HTTP/1.1", 400, framing.problem_title(400))
        written = self.connection.write_headers(start, headers, body)
        self.connection.finish()
        written.add_done_callback(lambda _: self.connection.close())


class BodyLimitedApplication(tornado.web.Application):
    """`tornado.web.Application` whose stock-server requests get a 413 for oversized bodies."""

    def __init__(self, *args: object, max_body_size: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.max_body_size = max_body_size

    @override
    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        if isinstance(request_conn, HTTP1Connection):
            return _OversizeBodyDrain(delegate, request_conn, self.max_body_size)
        return delegate
