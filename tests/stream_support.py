"""Clients of /api/v1/stream for the tests: tornado's WebSocket client, and a small SSE client
on a raw socket (so a test can also stop reading, like a slow consumer)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson
import tornado.httpclient
import tornado.websocket

STREAM = "/api/v1/stream"


def stream_query(
    products: Sequence[int] = (), *, orders: bool = False, token: str | None = None
) -> str:
    pairs: list[tuple[str, Any]] = [("product_id", p) for p in products]
    if orders:
        pairs.append(("orders", "true"))
    if token is not None:
        pairs.append(("access_token", token))
    return f"{STREAM}?{urlencode(pairs)}"


class WsStream:
    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        ca_file: str | None = None,
    ) -> WsStream:
        scheme = "ws" if ca_file is None else "wss"
        request = tornado.httpclient.HTTPRequest(
            f"{scheme}://127.0.0.1:{port}{path}",
            headers=headers or {},
            request_timeout=10,
            ca_certs=ca_file,
        )
        return cls(await tornado.websocket.websocket_connect(request))

    async def next(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next message, or None when the server closed the stream."""
        text = await asyncio.wait_for(self.conn.read_message(), timeout)
        return None if text is None else orjson.loads(text)

    async def next_of(self, message_type: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of `message_type`, skipping others."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await self.next(max(0.01, deadline - asyncio.get_running_loop().time()))
            assert message is not None, f"stream closed before a {message_type}"
            if message["type"] == message_type:
                return message

    def close(self) -> None:
        self.conn.close()


class SseStream:
    """GET with `Accept: text/event-stream`; parses the chunked body into `data:` events."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, head: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.status = status
        self.head = head
        self.body = b""
        self._buffer = b""
        self.comments = 0

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> SseStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        stream = cls(reader, writer, status, head)
        if "transfer-encoding: chunked" not in head.lower():
            length = next(
                (
                    int(h.split(":", 1)[1])
                    for h in head.split("\r\n")
                    if h.lower().startswith("content-length:")
                ),
                0,
            )
            stream.body = await reader.readexactly(length)
        return stream

    def json(self) -> Any:
        return orjson.loads(self.body)

    async def _chunk(self) -> bytes | None:
        size_line = await self.reader.readline()
        if not size_line:
            return None
        size = int(size_line.strip(), 16)
        if size == 0:
            await self.reader.readline()
            return None
        data = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return data

    async def next(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next `data:` event, or None when the response ended."""
        async with asyncio.timeout(timeout):
            while True:
                event, sep, rest = self._buffer.partition(b"\n\n")
                if sep:
                    self._buffer = rest
                    data = [
                        line[len(b"data: ") :]
                        for line in event.split(b"\n")
                        if line.startswith(b"data: ")
                    ]
                    if data:
                        return orjson.loads(b"\n".join(data))
                    self.comments += 1
                    continue
                chunk = await self._chunk()
                if chunk is None:
                    return None
                self._buffer += chunk

    async def next_of(self, message_type: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await self.next(max(0.01, deadline - asyncio.get_running_loop().time()))
            assert message is not None, f"stream ended before a {message_type}"
            if message["type"] == message_type:
                return message

    def close(self) -> None:
        self.writer.close()
