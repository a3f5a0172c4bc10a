"""Deadlines of a fast connection, checked by one periodic sweep per server.

A connection is always in one phase, and each phase has its own allowance: reading headers
(``header_timeout``, also for a new connection that has not begun a request), reading a body
(``body_timeout``), idle between keep-alive requests or a client not reading our answer
(``idle_connection_timeout``), and lingering after a close (`LINGER_SECONDS` while nothing more
of the answer is sent). The phase changes set a deadline; no timer is armed or cancelled per
request. `DeadlineSweeper` checks every connection every ``min(timeouts) / 4`` (at most 1 s),
so a deadline fires up to one sweep interval late.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

from tornado.log import gen_log

if TYPE_CHECKING:
    import asyncio
    from collections import deque

    from server.http.fast.parser import Message

# Phases (what the connection is waiting for)
NONE = 0
IDLE = 1
HEADER = 2
BODY = 3
WRITE = 4
LINGER = 5

# After a refusal or a ``Connection: close`` response we half-close and keep
# reading (discarding) for a moment so unread request bytes do not turn the
# close into a RST that destroys the response in flight ("lingering close").
LINGER_SECONDS = 2.0


class Timeouts(Protocol):
    """What a connection's server allows (FastHTTPServer)."""

    idle_connection_timeout: float
    body_timeout: float | None
    header_timeout: float


class Deadlines:
    """Mixed into `FastHTTPConnection`; the state it reads is the connection's."""

    if TYPE_CHECKING:
        transport: asyncio.Transport
        context: object
        _loop: asyncio.AbstractEventLoop
        _server: Timeouts
        _phase: int
        _deadline: float
        _linger_buf: int
        _lingering: bool
        _closed: bool
        _discard: bool
        _read_paused: bool
        _write_paused: bool
        _in_headers: bool
        _fresh: bool
        _parsing: Message | None
        _active: Message | None
        _queue: deque[Message]
        _body_timeout: float | None

        def _abort(self) -> None: ...

    def _update_deadline(self) -> None:
        if self._lingering or self._closed:
            return
        if self._write_paused:
            phase = WRITE
        elif self._in_headers:
            phase = HEADER
        elif self._parsing is not None:
            phase = BODY
        elif self._active is None and not self._queue:
            phase = HEADER if self._fresh else IDLE
        else:
            phase = NONE
        if phase == self._phase:
            return
        self._phase = phase
        server = self._server
        timeout: float | None
        if phase == IDLE or phase == WRITE:
            timeout = server.idle_connection_timeout
        elif phase == HEADER:
            timeout = server.header_timeout
        elif phase == BODY:
            timeout = self._body_timeout if self._parsing is self._active else server.body_timeout
        else:
            timeout = None
        self._deadline = self._loop.time() + timeout if timeout else 0.0

    def _start_linger_clock(self) -> None:
        self._phase = LINGER
        self._deadline = self._loop.time() + LINGER_SECONDS

    def _check_deadline(self, now: float) -> None:
        phase = self._phase
        if self._closed or not self._deadline or now < self._deadline:
            return
        if phase == LINGER:
            size = self.transport.get_write_buffer_size()
            if size and size != self._linger_buf:  # still sending the response
                self._linger_buf = size
                self._deadline = now + LINGER_SECONDS
                return
            self.transport.abort()
            return
        if self._read_paused and phase in (IDLE, HEADER, BODY):
            return  # we stopped reading; the client is not to blame
        if phase == WRITE:
            gen_log.info("Closing %s: client stopped reading the response", self.context)
            self._abort()
        elif phase == BODY:
            gen_log.info("Timeout reading body from %s", self.context)
            self._discard = True
            self.transport.close()
        elif phase == HEADER:
            gen_log.info("Timeout reading headers from %s", self.context)
            self._discard = True
            self.transport.close()
        elif phase == IDLE:
            if self._active is not None or self._queue:  # pragma: no cover - defensive
                self._phase = NONE
                self._deadline = 0.0
                return
            self._discard = True
            self.transport.close()


def sweep_interval(*timeouts: float | None) -> float:
    """A quarter of the shortest timeout, between 20 ms and 1 s."""
    given = [t for t in timeouts if t]
    return min(1.0, max(0.02, min(given, default=4.0) / 4))


class DeadlineSweeper:
    """The one timer of a server: checks every connection's deadline each `interval` seconds,
    for as long as there are connections or `serving()`."""

    def __init__(
        self, connections: Collection[Deadlines], interval: float, serving: Callable[[], bool]
    ) -> None:
        self.interval = interval
        self._connections = connections
        self._serving = serving
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is None:
            self._handle = loop.call_later(self.interval, self._sweep, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now = loop.time()
        for conn in list(self._connections):
            if conn._deadline:
                try:
                    conn._check_deadline(now)
                except Exception:  # pragma: no cover - defensive
                    gen_log.error("Error checking connection deadline", exc_info=True)
        if self._connections or self._serving():
            self.start(loop)
