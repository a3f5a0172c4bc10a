"""The gateway's batched log handler: no flush per request line, nothing lost."""

from __future__ import annotations

import io
import logging

from server.observability import BatchedStreamHandler, JsonFormatter, flush_logs


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("storefront.access", level, __file__, 1, message, (), None)


def test_info_lines_are_written_without_a_flush_each_then_flushed_when_due() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    for n in range(5):
        handler.handle(_record(logging.INFO, f"GET /x {n}"))
    assert stream.flushes == 0 and stream.getvalue().count("\n") == 5
    handler.flush_due()
    handler.flush_due()  # nothing new: no second flush
    assert stream.flushes == 1


def test_warnings_are_flushed_at_once_and_close_flushes() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    handler.handle(_record(logging.WARNING, "GET /x 404"))
    assert stream.flushes == 1
    handler.handle(_record(logging.INFO, "GET /x 200"))
    handler.close()
    assert stream.flushes == 2


def test_flush_logs_reaches_the_root_handlers() -> None:
    stream = CountingStream()
    handler = BatchedStreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        handler.handle(_record(logging.INFO, "GET /x 200"))
        flush_logs()
        assert stream.flushes == 1
    finally:
        root.removeHandler(handler)
