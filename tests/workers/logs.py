"""Log lines as production writes them: formatted by JsonFormatter when they are emitted."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from server.observability import JsonFormatter


class JsonLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@contextmanager
def json_lines(logger: str, level: int = logging.INFO) -> Iterator[list[dict[str, Any]]]:
    handler = JsonLines()
    target = logging.getLogger(logger)
    previous = target.level
    target.addHandler(handler)
    target.setLevel(level)
    try:
        yield handler.lines
    finally:
        target.removeHandler(handler)
        target.setLevel(previous)
