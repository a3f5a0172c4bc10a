"""Writing a response: the head in one join, its body framing, and the refusals we answer ourselves.

`response_head` decides how a response is delimited (``Content-Length``, chunked, or the close of
an HTTP/1.0 connection; nothing for HEAD, 204 and 304), stamps ``Connection`` and
``Transfer-Encoding`` to match, and refuses CR/LF smuggled into the status line or a header.
`problem` is the ``application/problem+json`` answer to a request refused before it reached the
application.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tornado import httputil

from server.http.fast.headers import FAST_LAYOUT
from server.http.fast.parser import CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, Message

# Whether response headers are read from tornado's internal layout (a test turns it off, with
# parser.FAST_HEADERS, to exercise the public-API path).
FAST_HEADERS = FAST_LAYOUT

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"
END_HEAD = b"\r\n\r\n"

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


def problem_title(status: int) -> str:
    return _TITLES.get(status) or httputil.responses.get(status, "Error")


def problem_body(status: int, detail: str) -> bytes:
    """The problem+json document refusing a request."""
    return json.dumps(
        {"type": "about:blank", "title": problem_title(status), "status": status, "detail": detail},
        separators=(",", ":"),
    ).encode()


def problem(status: int, detail: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole ``Connection: close`` problem+json response refusing a request, with the
    server's own `headers` (a request id, security headers)."""
    title = problem_title(status)
    body = problem_body(status, detail)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def response_head(
    msg: Message, start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders
) -> tuple[bytes, bool, int | None]:
    """The encoded head of the answer to `msg`, whether its body goes chunked, and how many body
    bytes it declares (None: until the end). Clears `msg.keep_alive` when the answer ends the
    connection (the application asked to close, or an HTTP/1.0 body delimited by the close)."""
    code = start_line.code
    method = msg.method
    if FAST_HEADERS:
        as_list = headers._as_list
        cl_values = as_list.get(CONTENT_LENGTH)
        cl = None if cl_values is None else ",".join(cl_values)
        conn_values = as_list.get(CONNECTION)
        app_conn = None if conn_values is None else ",".join(conn_values)
    else:
        cl = headers.get(CONTENT_LENGTH)
        app_conn = headers.get(CONNECTION)
    if app_conn is not None and "close" in app_conn.lower():
        msg.keep_alive = False  # the application asked to close
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
            headers[CONNECTION] = "close"
    elif msg.keep_alive:
        headers[CONNECTION] = "Keep-Alive"
    if chunked:
        headers[TRANSFER_ENCODING] = "chunked"
    entry = _STATUS_LINES.get(code)
    if entry is not None and entry[0] == start_line.reason:
        status = entry[1]
    else:
        line = f"HTTP/1.1 {code} {start_line.reason}"
        if "\r" in line or "\n" in line:
            raise ValueError(f"Illegal characters (CR or LF) in status line: {line!r}")
        status = line.encode("latin-1") + CRLF
    if FAST_HEADERS:
        lines = [f"{n}: {v}" for n, values in headers._as_list.items() for v in values]
    else:
        lines = [f"{n}: {v}" for n, v in headers.get_all()]
    if lines:
        block = "\r\n".join(lines)
        seps = len(lines) - 1
        if block.count("\r") != seps or block.count("\n") != seps:
            raise ValueError(f"Illegal characters (CR or LF) in headers: {block!r}")
        head = b"".join((status, block.encode("latin-1"), END_HEAD))
    else:
        head = status + CRLF
    return head, chunked, remaining


def switch_head(start_line: httputil.ResponseStartLine, headers: httputil.HTTPHeaders) -> bytes:
    """The 101 of a WebSocket handshake, as the application built it (its Connection: Upgrade
    stays)."""
    lines = [f"HTTP/1.1 101 {start_line.reason}", *(f"{n}: {v}" for n, v in headers.get_all())]
    block = "\r\n".join(lines)
    if block.count("\r") != len(lines) - 1 or block.count("\n") != len(lines) - 1:
        raise ValueError("Illegal characters (CR or LF) in the 101 response")
    return block.encode("latin-1") + END_HEAD


def chunk_frame(chunk: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"".join((b"%x\r\n" % len(chunk), chunk, CRLF))
