"""Flow control of a fast connection, both ways.

Reading: requests parsed ahead of the one being served (pipelining) and body bytes a busy
streaming delegate has not taken yet are buffered up to `READ_HIGH` bytes or `MAX_QUEUED`
requests; past that, reading from the socket pauses and the unparsed rest waits in a stash until
the queue drains below `READ_LOW` / half of `MAX_QUEUED`.

Writing: while the transport's buffer is above its high-water mark (asyncio's ``pause_writing``),
``write()`` hands back a future that resolves at ``resume_writing``, and a finished response
waits there before the next request starts. Otherwise every write returns one shared,
already-completed future, so an unblocked response allocates none.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from server.http.fast import deadlines

if TYPE_CHECKING:
    from collections import deque

    from server.http.fast.parser import Message

READ_HIGH = 256 * 1024
READ_LOW = 64 * 1024
MAX_QUEUED = 16
# Large reads are parsed in slices of this size, so a flood of tiny pipelined requests stops
# being parsed once enough are queued.
SLICE = 4096
# Bytes read and thrown away after the connection stopped parsing (a refusal, a close) before
# reading stops too.
DISCARD_MAX = 1 << 20


class FlowControl:
    """Mixed into `FastHTTPConnection`; the state it reads is the connection's."""

    if TYPE_CHECKING:
        transport: asyncio.Transport
        _loop: asyncio.AbstractEventLoop
        _done: asyncio.Future[None]
        _queue: deque[Message]
        _stash: bytes
        _stash_scheduled: bool
        _buffered: int
        _read_paused: bool
        _write_paused: bool
        _waiters: list[asyncio.Future[None]]
        _discard: bool
        _discarded: int
        _closed: bool
        _finish_deferred: bool
        _phase: int

        def _feed(self, data: bytes) -> None: ...
        def _request_done(self) -> None: ...
        def _update_deadline(self) -> None: ...

    # ---- writing (asyncio.Protocol's flow-control callbacks)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_deadline()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        if self._finish_deferred:
            self._finish_deferred = False
            self._request_done()
        self._update_deadline()

    def _write_future(self) -> asyncio.Future[None]:
        if self._write_paused:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(fut)
            return fut
        return self._done

    # ---- reading

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            not self._read_paused
            or self._closed
            or self._buffered > READ_LOW
            or len(self._queue) >= MAX_QUEUED // 2
            or (self._discard and self._discarded > DISCARD_MAX)
        ):
            return
        if self._stash:
            # Never feed the parser from here: we may be inside one of its
            # callbacks.
            if not self._stash_scheduled:
                self._stash_scheduled = True
                self._loop.call_soon(self._feed_stash)
            return
        self._read_paused = False
        self.transport.resume_reading()
        self._phase = deadlines.NONE  # restart the clock for the client
        self._update_deadline()

    def _feed_stash(self) -> None:
        self._stash_scheduled = False
        data, self._stash = self._stash, b""
        if self._closed or self._discard or not data:
            return
        self._feed(data)
        self._maybe_resume_reading()
