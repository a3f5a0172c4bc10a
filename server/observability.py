"""Structured JSON logs (one object per line), the request log line, and Sentry.

A request's id is kept in a context variable for as long as its handler runs, so every log line
written on its behalf carries it, the tasks it enqueues carry it as a taskiq label, and the task
logs carry it again on the worker.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

import orjson
import tornado.web

from server import metrics

# Fields a log record may carry (set through `extra=`) that belong in the JSON line.
_CONTEXT_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "user_id", "task")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_name_var: ContextVar[str | None] = ContextVar("task_name", default=None)

access_log = logging.getLogger("storefront.access")


def current_request_id() -> str | None:
    return request_id_var.get()


class JsonFormatter(logging.Formatter):
    # (second, "YYYY-MM-DDTHH:MM:SS") of the last line: one attribute, so threads that log at
    # once never pair a second with another second's text.
    _second: tuple[int, str] = (-1, "")

    def timestamp(self, created: float) -> str:
        """RFC 3339 UTC with milliseconds; the date part is formatted once per second."""
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in _CONTEXT_FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = value
        if "request_id" not in entry and (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        if "task" not in entry and (task := task_name_var.get()) is not None:
            entry["task"] = task
        data = fields.get("data")
        if isinstance(data, Mapping):
            for key, value in data.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class BatchedStreamHandler(logging.StreamHandler):
    """Writes lines without flushing each one: a busy gateway logs a line per request, and a
    flush per line is a write syscall per request. `flush_due()` (every ~100 ms on the loop)
    writes what accumulated; warnings and errors, and the shutdown, flush at once."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._dirty = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
        else:
            self._dirty = True

    def write_entry(self, levelno: int, entry: dict[str, Any]) -> None:
        """Write one JSON object as a line, as `emit` would have written it from a record."""
        line = orjson.dumps(entry, default=str).decode() + self.terminator
        self.acquire()
        try:
            self.stream.write(line)
        finally:
            self.release()
        if levelno >= logging.WARNING:
            self.flush()
        else:
            self._dirty = True

    def flush_due(self) -> None:
        if self._dirty:
            self._dirty = False
            self.flush()

    def close(self) -> None:
        self.flush()
        super().close()


def flush_logs() -> None:
    """Flush batched log lines (the gateway calls this periodically)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchedStreamHandler):
            handler.flush_due()


def configure_logging(level: str = "INFO", *, batched: bool = False) -> None:
    # The JSON line carries none of these; computing them (a stack walk for the caller's file
    # and line) was a third of the cost of each access-log line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchedStreamHandler(sys.stdout) if batched else logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Tornado's own access log is replaced by ours.
    logging.getLogger("tornado.access").propagate = False
    logging.getLogger("tornado.access").disabled = True


# ---- the request log line and the HTTP metrics, in one place ---------------------------------

BeforeRequest = Callable[[Any], Awaitable[None]]


def bind_request_context(inner: BeforeRequest | None) -> BeforeRequest:
    """A `before_request` hook that publishes the request id to the handler's context first.

    Tornado runs `prepare()` and the verb method in one task, so the variable stays set for the
    whole request (and is copied into any task the request spawns) without leaking to others.
    """

    async def hook(handler: Any) -> None:
        request_id_var.set(getattr(handler, "request_id", None))
        if inner is not None:
            await inner(handler)

    return hook


class RequestLogger:
    """Tornado's `log_function`: one JSON line and the HTTP metrics per finished request.

    `templates` maps each handler class to its route template, so metrics are labelled by
    route (`/api/v1/products/{id}`), never by raw path.
    """

    def __init__(self, templates: Mapping[type[tornado.web.RequestHandler], str]) -> None:
        self.templates = dict(templates)

    def __call__(self, handler: tornado.web.RequestHandler) -> None:
        request = handler.request
        self.record(
            request.method or "GET",
            request.path,
            self.templates.get(type(handler), metrics.UNMATCHED_ROUTE),
            handler.get_status(),
            request.request_time(),
            getattr(handler, "request_id", None),
            _user_id(handler),
        )

    def record(
        self,
        method: str,
        path: str,
        route: str,
        status: int,
        seconds: float,
        request_id: str | None,
        user_id: int | None,
    ) -> None:
        """The metrics and the log line of one finished request (also of a replayed one)."""
        metrics.observe_http(method, route, status, seconds)
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if not access_log.isEnabledFor(level):
            return
        fields = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000.0, 3),
            "user_id": user_id,
        }
        sink = _direct_sink(level)
        if sink is None:
            access_log.log(level, "%s %s %d", method, path, status, extra=fields)
            return
        # The line JsonFormatter would write, without a LogRecord and the logging machinery
        # around it: that was most of the cost of logging each request.
        entry: dict[str, Any] = {
            "timestamp": sink.formatter.timestamp(time.time()),  # type: ignore[union-attr]
            "level": logging.getLevelName(level),
            "logger": access_log.name,
            "message": f"{method} {path} {status}",
        }
        for name, value in fields.items():
            if value is not None:
                entry[name] = value
        if (task := task_name_var.get()) is not None:
            entry["task"] = task
        sink.write_entry(level, entry)


def _direct_sink(level: int) -> BatchedStreamHandler | None:
    """The handler an access-log line would reach, when it is the only one and writes exactly what
    `write_entry` writes (one BatchedStreamHandler with a JsonFormatter, no filters on the way);
    otherwise None, and the line goes through `logging` as usual."""
    if access_log.filters or access_log.disabled:
        return None
    logger: logging.Logger | None = access_log
    while logger is not None and logger is not logging.root:
        if logger.handlers or not logger.propagate:
            return None
        logger = logger.parent
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or root.filters:
        return None
    handler = handlers[0]
    if (
        type(handler) is not BatchedStreamHandler
        or handler.filters
        or type(handler.formatter) is not JsonFormatter
        or level < handler.level
    ):
        return None
    return handler


def _user_id(handler: tornado.web.RequestHandler) -> int | None:
    # Only a principal the handler already resolved: logging must never authenticate.
    if not getattr(handler, "_principal_resolved", False):
        return None
    principal = getattr(handler, "_principal", None)
    user_id = getattr(principal, "user_id", None)
    return user_id if isinstance(user_id, int) else None


# ---- Sentry -----------------------------------------------------------------------------------

_SECRET_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-forwarded-for",
        "x-real-ip",
    )
)


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry `before_send`: keep what locates a failure, drop what identifies or authorises.

    Headers that carry credentials or addresses, cookies, bodies (passwords, addresses), query
    strings (e-mails in filters) and everything about the user but the id are removed; the
    request id is added as a tag so the event can be matched with the log line.
    """
    request = event.get("request")
    if isinstance(request, dict):
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS
            }
        for key in ("cookies", "data", "query_string", "env"):
            request.pop(key, None)
    user = event.get("user")
    if isinstance(user, dict):
        event["user"] = {"id": user["id"]} if "id" in user else {}
    request_id = request_id_var.get()
    if request_id is not None:
        tags = event.setdefault("tags", {})
        if isinstance(tags, dict):
            tags["request_id"] = request_id
    return event


def configure_sentry(
    dsn: str | None, environment: str, *, transport: Any = None, release: str | None = None
) -> bool:
    """Enable Sentry when a DSN is set; `transport` replaces the network (tests)."""
    if not dsn:
        return False
    import sentry_sdk

    options: dict[str, Any] = {
        "dsn": dsn,
        "environment": environment,
        "max_request_body_size": "never",
        "traces_sample_rate": 0.0,
        "before_send": scrub_event,
        **_no_personal_data(),
    }
    if transport is not None:
        options["transport"] = transport
    if release is not None:
        options["release"] = release
    sentry_sdk.init(**options)
    return True


def _no_personal_data() -> dict[str, Any]:
    """`send_default_pii=False`, spelled as the installed SDK wants it (newer releases replace
    the flag with `data_collection` and warn about it)."""
    from sentry_sdk.consts import ClientConstructor

    # Stack frames' locals are left out too: they hold what the request carried (a login body's
    # password, a token).
    if "data_collection" not in inspect.signature(ClientConstructor.__init__).parameters:
        return {"send_default_pii": False, "include_local_variables": False}
    return {
        "data_collection": {
            "stack_frame_variables": False,
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "http_headers": {
                "request": {
                    "mode": "denylist",
                    "terms": [
                        "authorization",
                        "cookie",
                        "forwarded",
                        "-ip",
                        "remote-",
                        "via",
                        "-user",
                        "api-key",
                    ],
                }
            },
        }
    }
