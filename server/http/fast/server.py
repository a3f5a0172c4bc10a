"""The fast server: listening sockets, the set of open connections, graceful drain.

Each accepted connection is a `FastHTTPConnection` (server/http/fast/connection.py) serving the
same ``tornado.httputil.HTTPServerConnectionDelegate``, usually a ``tornado.web.Application``.
One `DeadlineSweeper` per server enforces every connection's timeouts.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from typing import Any, cast

from tornado import httputil
from tornado.log import gen_log

from server.http.fast.connection import FastHTTPConnection
from server.http.fast.deadlines import DeadlineSweeper, sweep_interval


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
        refusal_headers: Callable[[], Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        self.delegate = delegate
        # Headers for the answers the connection gives itself (400, 413, 431 before the
        # application sees a request): the application's own, such as a request id.
        self.refusal_headers = refusal_headers
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size
        self.idle_connection_timeout = idle_connection_timeout
        self.body_timeout = body_timeout
        self.header_timeout = header_timeout
        self._servers: list[asyncio.Server] = []
        self._connections: set[FastHTTPConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None
        self._empty: asyncio.Event | None = None
        self._sweeper = DeadlineSweeper(
            self._connections,
            sweep_interval(idle_connection_timeout, body_timeout, header_timeout),
            lambda: any(s.is_serving() for s in self._servers),
        )

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
            self._sweeper.stop()

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
        if self._loop is not None:
            self._sweeper.start(self._loop)
