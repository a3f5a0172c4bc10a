"""The gateway's batched log handler: no flush per request line, nothing lost."""

from __future__ import annotations

import io
import logging

import orjson

from server.observability import (
    BatchedStreamHandler,
    JsonFormatter,
    RequestLogger,
    _direct_sink,
    flush_logs,
)


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


class _Request:
    method = "GET"
    path = "/api/v1/products/7"

    def request_time(self) -> float:
        return 0.0012345


class _Handler:
    request = _Request()
    request_id = "0123456789abcdef"
    _principal_resolved = True

    def __init__(self, status: int, user_id: int | None) -> None:
        self.status = status
        self._principal = type("P", (), {"user_id": user_id})() if user_id else None

    def get_status(self) -> int:
        return self.status


def _access_lines(direct: bool, handler: _Handler) -> list[dict[str, object]]:
    """What RequestLogger writes for `handler`, through its direct path or through `logging`."""
    stream = CountingStream()
    sink = BatchedStreamHandler(stream)
    sink.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [sink]
    root.setLevel(logging.INFO)
    if not direct:
        sink.addFilter(lambda record: True)  # any filter sends lines through logging
    try:
        assert (_direct_sink(logging.INFO) is sink) == direct
        RequestLogger({})(handler)  # type: ignore[arg-type]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert (stream.flushes == 1) == (handler.status >= 400)  # warnings flush at once
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_the_direct_access_line_is_the_line_logging_would_write() -> None:
    for status, user_id in ((200, 42), (404, None), (503, 7)):
        direct = _access_lines(True, _Handler(status, user_id))
        logged = _access_lines(False, _Handler(status, user_id))
        assert len(direct) == len(logged) == 1
        for line in (direct[0], logged[0]):
            assert line.pop("timestamp")  # differs by the clock only
        assert list(direct[0].items()) == list(logged[0].items())
        assert direct[0]["message"] == f"GET /api/v1/products/7 {status}"
        assert direct[0]["level"] == {200: "INFO", 404: "WARNING", 503: "ERROR"}[status]
        assert direct[0].get("user_id") == user_id and direct[0]["duration_ms"] == 1.234
