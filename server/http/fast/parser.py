"""Reading a request head: what llhttp handed over, checked and turned into a `Message`.

llhttp (through httptools) splits the bytes into a method, a target, a version and raw header
pairs; this module decides what they mean. It refuses the framing shapes that lead to request
smuggling (see the package docstring for the list), works out keep-alive, and builds tornado's
`HTTPHeaders` directly in its internal layout when that layout is known (headers.py).
Everything here is a pure function of its arguments, so the connection stays about sequencing.
"""

from __future__ import annotations

from typing import Any

from tornado import httputil

from server.http.fast.headers import FAST_LAYOUT, RequestHeaders

HTTP11 = "HTTP/1.1"
HTTP10 = "HTTP/1.0"
_VERSIONS = {"1.1": HTTP11, "1.0": HTTP10}

_METHODS: dict[bytes, str] = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
}

# Header names we look at ourselves; compared against the normalised name.
CONTENT_LENGTH = "Content-Length"
TRANSFER_ENCODING = "Transfer-Encoding"
CONNECTION = "Connection"
_EXPECT = "Expect"
_SPECIAL = frozenset((CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, _EXPECT))

# Whether request headers are built in tornado's internal layout (a test turns it off to
# exercise the public-API path).
FAST_HEADERS = FAST_LAYOUT

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

_new_headers = object.__new__


class Reject(Exception):
    """Raised from parser callbacks: refuse the request with ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class StopParsing(Exception):
    """Raised from parser callbacks to stop llhttp; nothing more is parsed."""


class Message:
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


def error_marker(status: int, detail: str) -> Message:
    """A queued stand-in for a request refused while others were ahead of it."""
    msg = Message(None, None, "", True, False, None, False, False)
    msg.error = (status, detail)
    return msg


def parse_head(parser: Any, url: bytes, raw_headers: list[tuple[bytes, bytes]]) -> Message:
    """The request whose head llhttp has just finished (`parser`, an ``HttpRequestParser``),
    from its target and raw header pairs; raises `Reject` for what is refused."""
    version = _VERSIONS.get(parser.get_http_version())
    if version is None:
        raise Reject(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    http11 = version is HTTP11
    raw_method = parser.get_method()
    method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
    fast = FAST_HEADERS
    headers: httputil.HTTPHeaders
    if fast:
        headers = _new_headers(RequestHeaders)
        as_list: dict[str, list[str]] = {}
        combined: dict[str, str] = {}
    else:
        headers = httputil.HTTPHeaders()
    cl_raw: bytes | None = None
    chunked = False
    conn: bytes | None = None
    expect = False
    names = _NAMES
    for raw_name, raw_value in raw_headers:
        name = names.get(raw_name) or _normalize_name(raw_name)
        if name in _SPECIAL:
            if name == CONTENT_LENGTH:
                # Refuse a second Content-Length even if it repeats the
                # same value: RFC 9112 lets a recipient merge equal
                # values, but a front proxy might not have, and any
                # disagreement about framing is a smuggling vector.
                if cl_raw is not None:
                    raise Reject(400, "multiple Content-Length headers")
                if not raw_value.isdigit():
                    raise Reject(400, "invalid Content-Length")
                cl_raw = raw_value
            elif name == TRANSFER_ENCODING:
                if chunked:
                    raise Reject(400, "multiple Transfer-Encoding headers")
                # Token-exact: no lists ("chunked, identity"), no other
                # codings, no trailing whitespace llhttp leaves in place.
                if raw_value.lower() != b"chunked":
                    raise Reject(400, "unsupported Transfer-Encoding")
                chunked = True
            elif name == CONNECTION:
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
    if chunked:
        if cl_raw is not None:
            raise Reject(400, "both Content-Length and Transfer-Encoding")
        if not http11:
            raise Reject(400, "Transfer-Encoding is not allowed in HTTP/1.0")
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
    upgrade = parser.should_upgrade()
    if upgrade:
        if method == "CONNECT":
            keep_alive = False
        elif chunked or content_length:
            raise Reject(400, "a request body with Upgrade is not supported")
    msg = Message(
        httputil.RequestStartLine(method, url.decode("latin-1"), version),
        headers,
        method,
        http11,
        keep_alive,
        content_length,
        chunked,
        expect,
    )
    if upgrade and method != "CONNECT":
        msg.websocket = headers.get("Upgrade", "").strip().lower() == "websocket"
    return msg
