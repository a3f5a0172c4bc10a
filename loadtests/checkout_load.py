"""The load generator of `make bench`'s checkout cell: what wrk cannot do, users with carts.

N workers, each its own registered user on its own keep-alive connection, loop one checkout
cycle for a fixed time: `POST /api/v1/cart/items {"product_id": p, "quantity": 1}` then
`POST /api/v1/orders {}` with a fresh `Idempotency-Key` (as the API asks clients to send). A
worker checks the clock only between cycles, so every cart is empty when the run ends.

Raw asyncio streams (uvloop when installed) and a minimal HTTP/1.1 client, so the generator
costs little next to the server; the bench runs it as its own process pinned to the load core,
like wrk. The last line of output is `CHECKOUT_JSON {...}`: cycles, duration, latency
percentiles of the checkout request (and of the add), socket errors, unexpected statuses, and
the generator's own CPU time.

Run: `python loadtests/checkout_load.py --url http://127.0.0.1:8080 --users users.json
--seconds 5` with users.json a list of `{"token": ..., "product_id": ...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

CART_ITEMS = "/api/v1/cart/items"
ORDERS = "/api/v1/orders"


@dataclass
class Tally:
    cycles: int = 0
    errors: int = 0
    status_errors: int = 0
    checkout_us: list[int] = field(default_factory=list)
    add_us: list[int] = field(default_factory=list)
    first_error: str = ""


class Connection:
    """One keep-alive HTTP/1.1 connection (reconnects when the server closes it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(head + body)
        reader = self.reader
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            payload = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            payload = b"".join(parts)
        else:
            payload = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _head(method: str, path: str, host: str, token: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode()


async def _worker(
    url: str, user: dict[str, Any], deadline: float, tally: Tally, key_prefix: str
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    authority = f"{host}:{port}"
    connection = Connection(host, port)
    add_body = orjson.dumps({"product_id": user["product_id"], "quantity": 1})
    add_head = _head("POST", CART_ITEMS, authority, user["token"], add_body)
    serial = itertools.count()
    clock = time.perf_counter
    try:
        while clock() < deadline:
            try:
                started = clock()
                status, reply = await connection.request(add_head, add_body)
                added = clock()
                if status != 200:
                    tally.status_errors += 1
                    tally.first_error = tally.first_error or f"add {status}: {reply[:300]!r}"
                    continue
                key = f"Idempotency-Key: {key_prefix}-{user['product_id']}-{next(serial)}\r\n"
                head = _head("POST", ORDERS, authority, user["token"], b"{}", key)
                status, reply = await connection.request(head, b"{}")
                done = clock()
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                tally.errors += 1
                tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
                connection.close()
                await asyncio.sleep(0.01)
                continue
            tally.add_us.append(int((added - started) * 1e6))
            if status != 201:
                tally.status_errors += 1
                tally.first_error = tally.first_error or f"checkout {status}: {reply[:300]!r}"
                continue
            tally.checkout_us.append(int((done - added) * 1e6))
            tally.cycles += 1
    finally:
        connection.close()


def _percentile(values: list[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, users: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    tally = Tally()
    key_prefix = f"bench-{os.getpid()}-{time.time_ns()}"
    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(url, user, deadline, tally, key_prefix) for user in users))
    elapsed = time.perf_counter() - started
    return {
        "cycles": tally.cycles,
        "duration_us": int(elapsed * 1e6),
        "p50_us": _percentile(tally.checkout_us, 0.50),
        "p90_us": _percentile(tally.checkout_us, 0.90),
        "p99_us": _percentile(tally.checkout_us, 0.99),
        "add_p50_us": _percentile(tally.add_us, 0.50),
        "add_p99_us": _percentile(tally.add_us, 0.99),
        "errors": tally.errors,
        "status_errors": tally.status_errors,
        "first_error": tally.first_error,
        "client_cpu_s": round(time.process_time() - cpu_started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server's base URL")
    parser.add_argument("--users", type=Path, required=True, help="JSON: [{token, product_id}]")
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    users = orjson.loads(args.users.read_bytes())
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args.url, users, args.seconds))
    else:
        result = uvloop.run(run(args.url, users, args.seconds))
    print("CHECKOUT_JSON " + orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
