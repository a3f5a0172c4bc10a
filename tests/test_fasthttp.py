"""Tests for server.http.fast: a tornado.web.Application served over real sockets.

Raw ``asyncio.open_connection`` sockets check exact bytes (framing, refusals,
pipelining, timeouts); tornado's AsyncHTTPClient checks ordinary requests.
Self-contained: the app and fixtures live in this file.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import tornado.httpclient
import tornado.web
import tornado.websocket
from tornado import httputil

from server.http.fast import FastHTTPConnection, FastHTTPServer

# ---- application ---------------------------------------------------------------------------


@dataclass
class State:
    events: list[str] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    big_max_buffer: int = 0
    big_writes: int = 0
    big_done: bool = False
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)


class JSONHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"hello": "world", "remote_ip": self.request.remote_ip})


class EchoLenHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.write({"length": len(self.request.body), "sha": hash(self.request.body) & 0xFFFF})


class StreamHandler(tornado.web.RequestHandler):
    async def get(self) -> None:
        for part in ("alpha,", "beta,", "gamma"):
            self.write(part)
            await self.flush()


class SlowHandler(tornado.web.RequestHandler):
    async def get(self) -> None:
        state: State = self.settings["state"]
        state.events.append("slow-start")
        state.slow_started.set()
        await asyncio.sleep(float(self.get_argument("delay", "0.3")))
        state.events.append("slow-end")
        self.write("slow done")

    def on_connection_close(self) -> None:
        state: State = self.settings["state"]
        state.events.append("slow-closed")
        state.closed.set()


class HeadHandler(tornado.web.RequestHandler):
    def head(self) -> None:
        self.set_header("X-Head", "yes")
        self.write("twelve bytes")

    def get(self) -> None:
        self.write("twelve bytes")


class CloseHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Connection", "close")
        self.write("bye")


class NotModifiedHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_status(304)


class BigHandler(tornado.web.RequestHandler):
    async def get(self) -> None:
        state: State = self.settings["state"]
        conn = self.request.connection
        assert isinstance(conn, FastHTTPConnection)
        chunk = b"x" * (256 * 1024)
        for _ in range(int(self.get_argument("n", "32"))):
            self.write(chunk)
            await self.flush()
            state.big_writes += 1
            state.big_max_buffer = max(state.big_max_buffer, conn.transport.get_write_buffer_size())
        state.big_done = True


@tornado.web.stream_request_body
class UploadHandler(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.received = 0
        limit = self.get_argument("limit", None)
        if limit is not None:
            conn = self.request.connection
            assert isinstance(conn, FastHTTPConnection)
            conn.set_max_body_size(int(limit))

    async def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)
        await asyncio.sleep(0)

    def put(self) -> None:
        self.write({"received": self.received})

    def on_connection_close(self) -> None:
        super().on_connection_close()  # fails the body future the handler awaits
        state: State = self.settings["state"]
        state.events.append("upload-closed")
        state.closed.set()


class EchoSocket(tornado.websocket.WebSocketHandler):
    """Echoes each message; `?refuse=1` answers the handshake with a 403 instead."""

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.get_query_argument("refuse", None):
            self.set_status(403)
            self.finish("no")
            return
        await super().get(*args, **kwargs)

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


def make_app(state: State) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/ws", EchoSocket),
            (r"/json", JSONHandler),
            (r"/echo", EchoLenHandler),
            (r"/stream", StreamHandler),
            (r"/slow", SlowHandler),
            (r"/head", HeadHandler),
            (r"/304", NotModifiedHandler),
            (r"/close", CloseHandler),
            (r"/big", BigHandler),
            (r"/upload", UploadHandler),
        ],
        state=state,
    )


# ---- fixtures and helpers ------------------------------------------------------------------

ServerFactory = Callable[..., Awaitable[FastHTTPServer]]


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
async def make_server(state: State) -> AsyncIterator[ServerFactory]:
    servers: list[FastHTTPServer] = []

    async def factory(
        delegate: httputil.HTTPServerConnectionDelegate | None = None, **kwargs: Any
    ) -> FastHTTPServer:
        srv = FastHTTPServer(delegate or make_app(state), **kwargs)
        await srv.listen(0, "127.0.0.1")
        servers.append(srv)
        return srv

    yield factory
    for srv in servers:
        srv.stop()
        await srv.close_all_connections(1.0)


@pytest.fixture
async def server(make_server: ServerFactory) -> FastHTTPServer:
    return await make_server()


@dataclass
class Response:
    status: int
    headers: httputil.HTTPHeaders
    body: bytes
    raw_head: bytes


async def read_response(
    reader: asyncio.StreamReader,
    *,
    head: bool = False,
    timeout: float = 5.0,
) -> Response:
    async def _read() -> Response:
        raw = await reader.readuntil(b"\r\n\r\n")
        text = raw.decode("latin-1")
        status_line, _, rest = text.partition("\r\n")
        assert status_line.startswith("HTTP/1.1 "), status_line
        status = int(status_line.split()[1])
        headers = httputil.HTTPHeaders.parse(rest)
        if head or status in (100, 204, 304):
            body = b""
        elif "Content-Length" in headers:
            body = await reader.readexactly(int(headers["Content-Length"]))
        elif headers.get("Transfer-Encoding") == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                data = await reader.readexactly(size + 2)
                assert data.endswith(b"\r\n")
                if size == 0:
                    break
                parts.append(data[:-2])
            body = b"".join(parts)
        else:
            body = await reader.read()
        return Response(status, headers, body, raw)

    return await asyncio.wait_for(_read(), timeout)


async def connect(
    srv: FastHTTPServer, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if rcvbuf is None:
        return await asyncio.open_connection("127.0.0.1", srv.port)
    # A small receive buffer keeps the kernel from absorbing megabytes of a
    # response the client is not reading.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    return await asyncio.open_connection(sock=sock)


async def assert_closed(
    reader: asyncio.StreamReader,
    timeout: float = 3.0,
) -> None:
    rest = await asyncio.wait_for(reader.read(), timeout)
    assert rest == b"", rest


async def wait_for(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


def problem(resp: Response) -> dict[str, Any]:
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.headers["Connection"] == "close"
    doc: dict[str, Any] = json.loads(resp.body)
    assert doc["status"] == resp.status
    return doc


# ---- ordinary requests ---------------------------------------------------------------------


async def test_json_get_with_http_client(server: FastHTTPServer) -> None:
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        resp = await client.fetch(f"http://127.0.0.1:{server.port}/json")
        assert resp.code == 200
        assert json.loads(resp.body) == {"hello": "world", "remote_ip": "127.0.0.1"}
        assert "Date" in resp.headers and "Server" in resp.headers
        post = await client.fetch(
            f"http://127.0.0.1:{server.port}/echo", method="POST", body=b"a" * 5000
        )
        assert json.loads(post.body)["length"] == 5000
        missing = await client.fetch(f"http://127.0.0.1:{server.port}/nope", raise_error=False)
        assert missing.code == 404
    finally:
        client.close()


async def test_keep_alive_two_requests_one_socket(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    for _ in range(2):
        writer.write(get("/json"))
        resp = await read_response(reader)
        assert resp.status == 200
        assert "Connection" not in resp.headers
        assert json.loads(resp.body)["hello"] == "world"
    assert len(server.connections) == 1
    writer.close()


async def test_pipelining_answers_in_order(server: FastHTTPServer, state: State) -> None:
    reader, writer = await connect(server)
    body = b"0123456789"
    writer.write(
        get("/slow?delay=0.2")
        + get("/json")
        + b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n"
        + body
        + get("/head")
    )
    first = await read_response(reader)
    assert first.body == b"slow done"
    second = await read_response(reader)
    assert json.loads(second.body)["hello"] == "world"
    third = await read_response(reader)
    assert json.loads(third.body)["length"] == 10
    fourth = await read_response(reader)
    assert fourth.body == b"twelve bytes"
    assert state.events == ["slow-start", "slow-end"]
    writer.close()


async def test_pipelining_flood_is_bounded_and_ordered(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    n = 200
    writer.write(b"".join(get(f"/json?i={i}") for i in range(n)))
    await writer.drain()
    (conn,) = server.connections
    max_queued = 0
    for _ in range(n):
        max_queued = max(max_queued, len(conn._queue))
        resp = await read_response(reader)
        assert resp.status == 200
    # queue cap (16) plus what one 4 KiB parser slice can hold
    assert max_queued <= 16 + 4096 // len(get("/json?i=0"))
    writer.close()


async def test_chunked_request_body(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"5\r\nhello\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"6;ext=1\r\n world\r\n0\r\nX-Trailer: ignored\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 200
    assert json.loads(resp.body)["length"] == 11
    writer.write(get("/json"))  # connection still usable
    assert (await read_response(reader)).status == 200
    writer.close()


async def test_expect_100_continue(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"data")
    resp = await read_response(reader)
    assert json.loads(resp.body)["length"] == 4
    writer.close()


async def test_streaming_response_uses_chunked(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(get("/stream"))
    resp = await read_response(reader)
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in resp.headers
    assert resp.body == b"alpha,beta,gamma"
    writer.write(get("/json"))
    assert (await read_response(reader)).status == 200
    writer.close()


async def test_streaming_response_http10_is_close_delimited(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    resp = await read_response(reader)  # no length: body runs to EOF
    assert "Transfer-Encoding" not in resp.headers
    assert resp.headers.get("Connection") != "Keep-Alive"
    assert resp.body == b"alpha,beta,gamma"
    writer.close()


async def test_head_and_304_have_no_body(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"HEAD /head HTTP/1.1\r\nHost: test\r\n\r\n")
    resp = await read_response(reader, head=True)
    assert resp.headers["X-Head"] == "yes"
    assert resp.headers["Content-Length"] == "12"
    writer.write(get("/304"))
    resp = await read_response(reader)
    assert resp.status == 304
    assert "Transfer-Encoding" not in resp.headers
    # Etag round trip: tornado answers 304 itself.
    writer.write(get("/head"))
    full = await read_response(reader)
    writer.write(get("/head", f"If-None-Match: {full.headers['Etag']}\r\n"))
    assert (await read_response(reader)).status == 304
    # If any of those had carried a body, this response would be misframed.
    writer.write(get("/json"))
    assert json.loads((await read_response(reader)).body)["hello"] == "world"
    writer.close()


async def test_http10_without_keep_alive_closes(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /json HTTP/1.0\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 200
    assert "Connection" not in resp.headers
    await assert_closed(reader)
    writer.close()


async def test_http10_keep_alive(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    for _ in range(2):
        writer.write(b"GET /json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = await read_response(reader)
        assert resp.headers["Connection"] == "Keep-Alive"
    writer.close()


async def test_connection_close_request(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(get("/json", "Connection: close\r\n") + get("/json"))
    resp = await read_response(reader)
    assert resp.headers["Connection"] == "close"
    await assert_closed(reader)  # the pipelined second request is ignored
    writer.close()


async def test_application_connection_close_is_honoured(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(get("/close"))
    resp = await read_response(reader)
    assert resp.body == b"bye" and resp.headers["Connection"] == "close"
    await assert_closed(reader)
    writer.close()


async def test_missing_host_is_400(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /json HTTP/1.1\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 400
    assert "Host" in problem(resp)["detail"]
    await assert_closed(reader)
    writer.close()


async def test_unsupported_version_is_505(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /json HTTP/2.0\r\nHost: test\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 505
    problem(resp)
    await assert_closed(reader)
    writer.close()


# ---- limits --------------------------------------------------------------------------------


async def test_body_over_limit_content_length_is_413(make_server: ServerFactory) -> None:
    srv = await make_server(max_body_size=1024)
    reader, writer = await connect(srv)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1025\r\nExpect: 100-continue\r\n\r\n"
    )
    resp = await read_response(reader)  # no 100 Continue first
    assert resp.status == 413
    assert resp.body == (
        b'{"type":"about:blank","title":"Payload Too Large","status":413,'
        b'"detail":"request body exceeds 1024 bytes"}'
    )
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.headers["Connection"] == "close"
    await assert_closed(reader)
    writer.close()


async def test_body_at_limit_is_accepted(make_server: ServerFactory) -> None:
    srv = await make_server(max_body_size=1024)
    reader, writer = await connect(srv)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024)
    assert json.loads((await read_response(reader)).body)["length"] == 1024
    writer.close()


async def test_body_over_limit_chunked_is_413(make_server: ServerFactory) -> None:
    srv = await make_server(max_body_size=1024)
    reader, writer = await connect(srv)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        writer.write(b"200\r\n" + b"b" * 512 + b"\r\n")
    resp = await read_response(reader)
    assert resp.status == 413
    assert problem(resp)["detail"] == "request body exceeds 1024 bytes"
    await assert_closed(reader)
    writer.close()


async def test_body_over_limit_sent_in_full_still_gets_413(make_server: ServerFactory) -> None:
    # The client sends everything without waiting; lingering close must keep
    # the unread body from turning our answer into a connection reset.
    srv = await make_server(max_body_size=1024)
    reader, writer = await connect(srv)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 300000\r\n\r\n" + b"z" * 300000
    )
    resp = await read_response(reader)
    assert resp.status == 413
    await assert_closed(reader)
    writer.close()


async def test_stream_request_body_can_raise_limit(make_server: ServerFactory) -> None:
    srv = await make_server(max_body_size=1024)
    reader, writer = await connect(srv)
    size = 200_000
    writer.write(
        f"PUT /upload?limit={size} HTTP/1.1\r\nHost: test\r\n".encode()
        + f"Content-Length: {size}\r\n\r\n".encode()
        + b"u" * size
    )
    resp = await read_response(reader)
    assert json.loads(resp.body) == {"received": size}
    writer.write(b"PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 2048\r\n\r\n")
    assert (await read_response(reader)).status == 413  # default limit again
    writer.close()


async def test_header_too_large_is_431(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /json HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    resp = await read_response(reader)
    assert resp.status == 431
    problem(resp)
    await assert_closed(reader)
    writer.close()


async def test_many_headers_too_large_is_431(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))
    writer.write(b"GET /json HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
    resp = await read_response(reader)
    assert resp.status == 431
    writer.close()


async def test_unterminated_header_line_is_431(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /json HTTP/1.1\r\nHost: test\r\nX-Big: ")
    for _ in range(100):
        writer.write(b"a" * 4096)
        await writer.drain()
    resp = await read_response(reader)
    assert resp.status == 431
    writer.close()


# ---- request smuggling shapes ------------------------------------------------------------

SMUGGLING = {
    "cl-and-te": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "te-and-cl": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "duplicate-cl-equal": b"Content-Length: 5\r\nContent-Length: 5\r\n",
    "duplicate-cl-different": b"Content-Length: 5\r\nContent-Length: 6\r\n",
    "cl-list": b"Content-Length: 5, 5\r\n",
    "cl-plus-sign": b"Content-Length: +5\r\n",
    "te-chunked-identity": b"Transfer-Encoding: chunked, identity\r\n",
    "te-identity-chunked": b"Transfer-Encoding: identity, chunked\r\n",
    "te-xchunked": b"Transfer-Encoding: xchunked\r\n",
    "te-trailing-space": b"Transfer-Encoding: chunked \r\n",
    "te-obs-fold": b"Transfer-Encoding:\r\n chunked\r\n",
    "te-space-before-colon": b"Transfer-Encoding : chunked\r\n",
    "te-twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "te-empty": b"Transfer-Encoding:\r\n",
    "bare-lf-header": b"X-A: 1\nX-B: 2\r\n",
    "invalid-header-name": b"X(A): 1\r\n",
    "control-char-in-value": b"X-A: a\x01b\r\n",
    "del-in-value": b"X-A: a\x7fb\r\n",
}


@pytest.mark.parametrize("extra", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_smuggling_shapes_are_refused(server: FastHTTPServer, extra: bytes) -> None:
    reader, writer = await connect(server)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: test\r\n"
        + extra
        + b"\r\n5\r\nhello\r\n0\r\n\r\n"
        + get("/json")
    )
    resp = await read_response(reader)
    assert resp.status == 400
    problem(resp)
    await assert_closed(reader)  # nothing after the refusal is served
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /json HTTP/1.1\nHost: test\n\n",
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n",
        b"GET /js on HTTP/1.1\r\nHost: test\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: test\r\nUpgrade: h2c\r\nConnection: upgrade\r\n"
        b"Content-Length: 5\r\n\r\nhello",
    ],
    ids=[
        "http10-chunked",
        "bare-lf-everywhere",
        "bad-chunk-size",
        "space-in-target",
        "upgrade-body",
    ],
)
async def test_malformed_requests_are_refused(server: FastHTTPServer, request_bytes: bytes) -> None:
    reader, writer = await connect(server)
    writer.write(request_bytes)
    resp = await read_response(reader)
    assert resp.status == 400
    problem(resp)
    await assert_closed(reader)
    writer.close()


async def test_refusal_waits_for_earlier_pipelined_response(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(get("/slow?delay=0.2") + b"GET /json HTTP/1.1\r\nHost: test\r\nX: \x01\r\n\r\n")
    first = await read_response(reader)
    assert first.status == 200 and first.body == b"slow done"
    second = await read_response(reader)
    assert second.status == 400
    await assert_closed(reader)
    writer.close()


async def test_upgrade_without_body_is_served_as_plain_request(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(get("/json", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"))
    writer.write(get("/json"))
    assert (await read_response(reader)).status == 200
    assert (await read_response(reader)).status == 200
    writer.close()


# ---- WebSocket upgrades ----------------------------------------------------------------------

WS_UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


async def test_websocket_is_handed_over_after_the_101(server: FastHTTPServer) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    conn = await tornado.websocket.websocket_connect(url)
    for text in ("hello", "x" * 70_000, "again"):
        await conn.write_message(text)
        assert await asyncio.wait_for(conn.read_message(), 3) == text
    # The connection is the WebSocket's now, no longer the HTTP server's.
    await wait_for(lambda: not server.connections)
    conn.close()


def test_websocket_is_handed_over_on_uvloop_too(state: State) -> None:
    """`storefront serve` runs on uvloop, whose transports wrap their sockets their own way."""
    uvloop = pytest.importorskip("uvloop")

    async def echo_twice() -> list[str | bytes | None]:
        srv = FastHTTPServer(make_app(state))
        await srv.listen(0, "127.0.0.1")
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        conn = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{srv.port}/ws")
        echoed = []
        for text in ("hello", "x" * 70_000):
            await conn.write_message(text)
            echoed.append(await asyncio.wait_for(conn.read_message(), 3))
        conn.close()
        srv.stop()
        await srv.close_all_connections(1.0)
        return echoed

    assert uvloop.run(echo_twice()) == ["hello", "x" * 70_000]


async def test_the_101_keeps_the_handshake_headers(server: FastHTTPServer) -> None:
    reader, writer = await connect(server)
    writer.write(get("/ws", WS_UPGRADE))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 101 ")
    headers = httputil.HTTPHeaders.parse(head.decode("latin-1").partition("\r\n")[2])
    assert headers["Connection"] == "Upgrade" and headers["Upgrade"] == "websocket"
    assert headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert "Transfer-Encoding" not in headers and "Content-Length" not in headers
    writer.close()


async def test_a_refused_handshake_closes_and_what_followed_is_not_parsed(
    server: FastHTTPServer,
) -> None:
    reader, writer = await connect(server)
    # A client that does not wait for the answer: the bytes after the upgrade request are
    # WebSocket frames to it, never a request to serve.
    writer.write(get("/ws?refuse=1", WS_UPGRADE) + get("/json"))
    resp = await read_response(reader)
    assert resp.status == 403 and resp.headers["Connection"] == "close"
    await assert_closed(reader)
    writer.close()


# ---- disconnects ---------------------------------------------------------------------------


async def test_client_disconnect_calls_close_callback(server: FastHTTPServer, state: State) -> None:
    _reader, writer = await connect(server)
    writer.write(get("/slow?delay=1.0"))
    await asyncio.wait_for(state.slow_started.wait(), 3)
    writer.close()
    await asyncio.wait_for(state.closed.wait(), 3)
    assert "slow-closed" in state.events
    await wait_for(lambda: not server.connections)


async def test_client_disconnect_mid_body_streaming_handler(
    server: FastHTTPServer, state: State
) -> None:
    _reader, writer = await connect(server)
    writer.write(b"PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await asyncio.wait_for(state.closed.wait(), 3)
    assert state.events == ["upload-closed"]


class RecordingDelegate(httputil.HTTPServerConnectionDelegate):
    """A bare HTTPServerConnectionDelegate, to see exactly which calls arrive."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closed = asyncio.Event()

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        outer = self

        class Message(httputil.HTTPMessageDelegate):
            def headers_received(
                self,
                start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                headers: httputil.HTTPHeaders,
            ) -> None:
                outer.calls.append(f"headers {start_line[0]} {start_line[1]}")

            def data_received(self, chunk: bytes) -> None:
                outer.calls.append(f"data {len(chunk)}")

            def finish(self) -> None:
                outer.calls.append("finish")
                request_conn.write_headers(
                    httputil.ResponseStartLine("HTTP/1.1", 200, "OK"),
                    httputil.HTTPHeaders({"Content-Length": "2"}),
                    b"ok",
                )
                request_conn.finish()

            def on_connection_close(self) -> None:
                outer.calls.append("on_connection_close")
                outer.closed.set()

        return Message()


async def test_disconnect_mid_body_calls_on_connection_close(
    make_server: ServerFactory,
) -> None:
    delegate = RecordingDelegate()
    srv = await make_server(delegate)
    _reader, writer = await connect(srv)
    writer.write(b"POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    await writer.drain()
    await wait_for(lambda: "data 10" in delegate.calls)
    writer.close()
    await asyncio.wait_for(delegate.closed.wait(), 3)
    assert delegate.calls == ["headers POST /x", "data 10", "on_connection_close"]


async def test_raw_delegate_happy_path(make_server: ServerFactory) -> None:
    delegate = RecordingDelegate()
    srv = await make_server(delegate)
    reader, writer = await connect(srv)
    writer.write(b"POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc")
    resp = await read_response(reader)
    assert resp.body == b"ok"
    assert delegate.calls == ["headers POST /x", "data 3", "finish"]
    writer.close()


# ---- timeouts ------------------------------------------------------------------------------


async def test_header_timeout_closes(make_server: ServerFactory) -> None:
    srv = await make_server(header_timeout=0.2)
    reader, writer = await connect(srv)
    writer.write(b"GET /json HTTP/1.1\r\nHost: te")
    start = time.monotonic()
    await assert_closed(reader)
    assert time.monotonic() - start < 2.0
    writer.close()


async def test_body_timeout_closes(make_server: ServerFactory) -> None:
    srv = await make_server(body_timeout=0.2)
    reader, writer = await connect(srv)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc")
    await assert_closed(reader)
    writer.close()


async def test_idle_keep_alive_timeout_closes(make_server: ServerFactory) -> None:
    srv = await make_server(idle_connection_timeout=0.2)
    reader, writer = await connect(srv)
    writer.write(get("/json"))
    assert (await read_response(reader)).status == 200
    start = time.monotonic()
    await assert_closed(reader)
    assert 0.1 < time.monotonic() - start < 2.0
    writer.close()


async def test_slow_handler_is_not_a_timeout(make_server: ServerFactory) -> None:
    srv = await make_server(idle_connection_timeout=0.1, header_timeout=0.1, body_timeout=0.1)
    reader, writer = await connect(srv)
    writer.write(get("/slow?delay=0.4"))
    assert (await read_response(reader)).body == b"slow done"
    writer.close()
    for request in (
        get("/slow?delay=0.4", "Connection: close\r\n"),
        b"GET /slow?delay=0.4 HTTP/1.0\r\n\r\n",
    ):
        reader, writer = await connect(srv)
        await asyncio.sleep(0.05)  # part of the idle allowance is used up first
        writer.write(request)
        assert (await read_response(reader)).body == b"slow done"
        writer.close()


# ---- shutdown --------------------------------------------------------------------------------


async def test_graceful_drain(server: FastHTTPServer, state: State) -> None:
    port = server.port
    idle_reader, idle_writer = await connect(server)
    idle_writer.write(get("/json"))
    assert (await read_response(idle_reader)).status == 200

    busy_reader, busy_writer = await connect(server)
    busy_writer.write(get("/slow?delay=0.5"))
    await asyncio.wait_for(state.slow_started.wait(), 3)

    server.stop()
    drain = asyncio.ensure_future(server.close_all_connections(5.0))
    await assert_closed(idle_reader, timeout=0.3)  # idle keep-alive: closed at once
    assert not drain.done()

    resp = await read_response(busy_reader)  # in-flight request finishes
    assert resp.body == b"slow done"
    assert resp.headers["Connection"] == "close"
    await assert_closed(busy_reader)
    await asyncio.wait_for(drain, 3)
    assert not server.connections
    assert "slow-closed" not in state.events
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    idle_writer.close()
    busy_writer.close()


async def test_drain_timeout_force_closes(server: FastHTTPServer, state: State) -> None:
    port = server.port
    reader, writer = await connect(server)
    writer.write(get("/slow?delay=5"))
    await asyncio.wait_for(state.slow_started.wait(), 3)
    server.stop()
    start = time.monotonic()
    await server.close_all_connections(0.3)
    assert time.monotonic() - start < 1.5
    assert not server.connections
    await assert_closed(reader)
    assert "slow-closed" in state.events
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.close()


# ---- backpressure --------------------------------------------------------------------------


async def test_slow_reader_backpressure(server: FastHTTPServer, state: State) -> None:
    n = 64  # 16 MiB response
    reader, writer = await connect(server, rcvbuf=16384)
    writer.write(get(f"/big?n={n}"))
    await asyncio.sleep(0.5)  # the client reads nothing meanwhile
    assert not state.big_done
    assert state.big_writes < n
    stalled_at = state.big_writes
    await asyncio.sleep(0.2)
    assert state.big_writes == stalled_at  # write futures are waiting, not resolving
    resp = await read_response(reader, timeout=20)
    assert len(resp.body) == n * 256 * 1024
    assert state.big_done
    # high-water mark (64 KiB by default) plus the one chunk that crossed it
    assert state.big_max_buffer <= 64 * 1024 + 256 * 1024 + 8192
    writer.close()


async def test_server_properties(server: FastHTTPServer) -> None:
    assert server.port > 0
    assert server.sockets and server.sockets[0].getsockname()[1] == server.port


# ---- variants --------------------------------------------------------------------------------


class HeaderEchoHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"x": self.request.headers.get_list("X-Multi"), "host": self.request.host})


async def test_public_headers_api_fallback(
    make_server: ServerFactory, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.http.fast import framing, parser

    monkeypatch.setattr(parser, "FAST_HEADERS", False)
    monkeypatch.setattr(framing, "FAST_HEADERS", False)
    app = make_app(state)
    app.add_handlers(r".*", [(r"/headers", HeaderEchoHandler)])
    srv = await make_server(app)
    reader, writer = await connect(srv)
    writer.write(get("/headers", "X-Multi: a\r\nx-multi: b \r\n") + get("/stream"))
    resp = await read_response(reader)
    assert json.loads(resp.body) == {"x": ["a", "b"], "host": "test"}
    streamed = await read_response(reader)
    assert streamed.body == b"alpha,beta,gamma"
    assert streamed.headers["Transfer-Encoding"] == "chunked"
    writer.close()


async def test_repeated_request_headers_fast_path(make_server: ServerFactory, state: State) -> None:
    app = make_app(state)
    app.add_handlers(r".*", [(r"/headers", HeaderEchoHandler)])
    srv = await make_server(app)
    reader, writer = await connect(srv)
    writer.write(get("/headers", "X-Multi: a\r\nx-multi: b \r\n"))
    assert json.loads((await read_response(reader)).body) == {"x": ["a", "b"], "host": "test"}
    writer.write(get("/json", "Host: other\r\n"))  # two Host headers
    assert (await read_response(reader)).status == 400
    writer.close()


def _uvloop_scenario() -> list[str]:
    """Keep-alive, pipelining, a refusal and backpressure on a uvloop loop."""
    uvloop = pytest.importorskip("uvloop")
    results: list[str] = []

    async def scenario() -> None:
        state = State()
        srv = FastHTTPServer(make_app(state), max_body_size=1024)
        await srv.listen(0, "127.0.0.1")
        try:
            reader, writer = await connect(srv)
            writer.write(get("/slow?delay=0.1") + get("/json") + get("/stream"))
            results.append((await read_response(reader)).body.decode())
            results.append(json.loads((await read_response(reader)).body)["hello"])
            results.append((await read_response(reader)).body.decode())
            writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
            results.append(str((await read_response(reader)).status))
            await assert_closed(reader)
            writer.close()

            reader, writer = await connect(srv, rcvbuf=16384)
            writer.write(get("/big?n=64"))
            await asyncio.sleep(0.3)
            results.append(f"stalled={not state.big_done}")
            body = (await read_response(reader, timeout=20)).body
            results.append(f"len={len(body)} max_buffer_ok={state.big_max_buffer < 1 << 20}")
            writer.close()
        finally:
            srv.stop()
            await srv.close_all_connections(1.0)

    uvloop.run(scenario())
    return results


async def test_under_uvloop() -> None:
    results = await asyncio.to_thread(_uvloop_scenario)
    assert results == [
        "slow done",
        "world",
        "alpha,beta,gamma",
        "413",
        "stalled=True",
        f"len={64 * 256 * 1024} max_buffer_ok=True",
    ]


class ChunkSizesHandler(tornado.web.RequestHandler):
    """Records the size of each piece of a streamed request body."""

    sizes: list[int]

    def prepare(self) -> None:
        self.sizes = []

    def data_received(self, chunk: bytes) -> None:
        self.sizes.append(len(chunk))

    def put(self) -> None:
        self.write({"total": sum(self.sizes), "pieces": len(self.sizes)})


async def test_large_body_is_delivered_in_large_pieces(
    make_server: ServerFactory, state: State
) -> None:
    app = make_app(state)
    app.add_handlers(r".*", [(r"/sizes", tornado.web.stream_request_body(ChunkSizesHandler))])
    srv = await make_server(app)
    reader, writer = await connect(srv)
    size = 512 * 1024
    writer.write(
        f"PUT /sizes HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n".encode()
        + b"p" * size
        + get("/json")
    )
    resp = json.loads((await read_response(reader)).body)
    assert resp["total"] == size
    assert resp["pieces"] <= size // 16384  # not 4 KiB parser slices
    assert (await read_response(reader)).status == 200
    writer.close()
