"""Requests refused before any handler runs still get problem+json, on both connections."""

from __future__ import annotations

import asyncio
import json

import pytest

from server.context import AppContext
from tests.conftest import Addresses, ApiClient


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, closed afterwards) of one raw request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await reader.readexactly(int(headers["content-length"]))
        closed = await asyncio.wait_for(reader.read(1), 5) == b""
        return int(status_line.split()[1]), headers, body, closed
    finally:
        writer.close()


@pytest.mark.parametrize(
    "head",
    [
        # Seen from a fuzzer: Tornado's request object refuses such a Host.
        b"DELETE /api/v1/categories/-26730 HTTP/1.1\r\nHost: g?SJK`cUQ!0(\r\n\r\n",
        b"GET /api/v1/products HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /api/v1/products HTTP/1.1\r\n\r\n",  # HTTP/1.1 needs a Host
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: a/b\r\nContent-Length: 5\r\n\r\nhello",
    ],
)
async def test_a_refused_head_is_a_problem_400_and_the_server_keeps_serving(
    gateway: Addresses, api: ApiClient, head: bytes
) -> None:
    status, headers, body, closed = await exchange(gateway.http_port, head)
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 400 and "host" in problem["detail"].lower()
    assert closed
    assert (await api.get("/healthz")).status == 200


@pytest.mark.parametrize(
    "length",
    [b"\xb2", b"\xd9\xa3", b"1" * 4301, b"9" * 25],  # "²" and an Arabic-Indic digit are isdigit()
    ids=["superscript-two", "arabic-indic-three", "4301-digits", "25-digits"],
)
async def test_a_content_length_that_is_not_a_plain_number_is_a_400(
    gateway: Addresses, api: ApiClient, length: bytes
) -> None:
    head = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
    try:
        writer.write(head)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert status_line.split()[1:2] in ([b"400"], [b"413"]), status_line
    assert (await api.get("/healthz")).status == 200


async def test_an_oversized_body_is_refused_with_the_headers_every_answer_has(
    gateway: Addresses, api: ApiClient, ctx: AppContext
) -> None:
    size = ctx.settings.max_body_size + 1
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(size).encode() + b"\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
    try:
        writer.write(head + b" " * size)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    status_line, *lines = answer.decode("latin-1").split("\r\n")[:-2]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert status_line.split()[1] == "413"
    assert headers["content-type"] == "application/problem+json"
    assert len(headers["x-request-id"]) >= 16
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert (await api.get("/healthz")).status == 200


async def test_a_missing_docs_asset_is_a_problem_not_an_html_page(api: ApiClient) -> None:
    missing = await api.get("/api/docs/static/nope.js")
    assert missing.status == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert missing.json()["status"] == 404 and missing.headers["X-Request-ID"]
