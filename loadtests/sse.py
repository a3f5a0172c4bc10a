"""A small Server-Sent Events client on a plain socket, for the load test's live streams.

Under Locust the socket module is gevent's (Locust monkey-patches on import), so a blocked read
yields to the other simulated users. One `SseStream` is one GET of /api/v1/stream: the response
head, then the chunked `text/event-stream` body split into events; `next()` returns each `data:`
payload with the time its last byte arrived (taken when `recv` returned, before any parsing, so
a latency measured against it is the gateway's and the network's, not this client's).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit


class StreamEnded(Exception):
    """The response ended (the last chunk, or the connection closed)."""


class SseStream:
    def __init__(self, sock: socket.socket, status: int, head: bytes, rest: bytes) -> None:
        self.sock = sock
        self.status = status
        self.head = head
        fields = [line.partition(b":") for line in head.lower().split(b"\r\n")[1:]]
        framing = {name.strip(): value.strip() for name, _, value in fields}
        self.chunked = framing.get(b"transfer-encoding") == b"chunked"
        # A refusal (problem+json) has a length; a body without either ends with the connection.
        length = framing.get(b"content-length")
        self._left = int(length) if length is not None and not self.chunked else None
        self.received_at = time.time()
        self.comments = 0
        self._raw = rest  # bytes read off the socket, not yet de-chunked
        self._body = b""  # the de-chunked body, not yet split into events
        self._ended = False

    @classmethod
    def open(
        cls,
        base_url: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> SseStream:
        """Connect, send the GET and read the response head (whatever its status)."""
        url = urlsplit(base_url)
        host = url.hostname or "127.0.0.1"
        port = url.port or (443 if url.scheme == "https" else 80)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if url.scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: {url.netloc}",
                "Accept: text/event-stream",
                "Cache-Control: no-cache",
            ]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    raise StreamEnded("the connection closed before a response head")
                buffer += data
                if len(buffer) > 65536:
                    raise StreamEnded("a response head over 64 KiB")
            head, _, rest = buffer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
        except BaseException:
            sock.close()
            raise
        return cls(sock, status, head, rest)

    def settimeout(self, seconds: float) -> None:
        self.sock.settimeout(seconds)

    def read_body(self, limit: int = 4096) -> bytes:
        """Up to `limit` bytes of a (short, non-stream) body, e.g. a problem+json refusal."""
        try:
            while len(self._body) < limit:
                piece = self._piece()
                if piece is None:
                    break
                self._body += piece
        except (OSError, StreamEnded):
            pass
        return self._body[:limit]

    def next(self) -> bytes:
        """The next event's `data:` payload (comments such as heartbeats and `retry:` are
        skipped, counted in `comments`). Raises StreamEnded at the end of the response, and the
        socket's timeout when nothing came for as long."""
        while True:
            event, sep, rest = self._body.partition(b"\n\n")
            if sep:
                self._body = rest
                data = [
                    line[5:].removeprefix(b" ")
                    for line in event.split(b"\n")
                    if line.startswith(b"data:")
                ]
                if data:
                    return b"\n".join(data)
                self.comments += 1
                continue
            piece = self._piece()
            if piece is None:
                raise StreamEnded("the response ended")
            self._body += piece

    def close(self) -> None:
        self.sock.close()

    # ---- the transfer coding ------------------------------------------------------------

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise StreamEnded("the connection closed")
        self.received_at = time.time()
        self._raw += data

    def _piece(self) -> bytes | None:
        """More of the body; None at its end (the last chunk, or the end of an unframed body)."""
        if self._ended:
            return None
        if not self.chunked:
            if self._left == 0:
                self._ended = True
                return None
            if not self._raw:
                try:
                    self._fill()
                except StreamEnded:
                    self._ended = True
                    return None
            piece, self._raw = self._raw, b""
            if self._left is not None:
                piece = piece[: self._left]
                self._left -= len(piece)
            return piece
        while True:
            line_end = self._raw.find(b"\r\n")
            if line_end >= 0:
                size = int(self._raw[:line_end].split(b";", 1)[0], 16)
                if size == 0:
                    self._ended = True
                    return None
                start = line_end + 2
                if len(self._raw) >= start + size + 2:
                    piece = self._raw[start : start + size]
                    self._raw = self._raw[start + size + 2 :]
                    return piece
            self._fill()
