"""The base REST handler: context injection, problem+json errors, JSON in and out, auth hooks.

Handlers only translate: parse the body into a typed struct, authorise, call one service
function, serialise. Every domain error becomes problem+json here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar, TypeVar

import msgspec
import orjson
import tornado.web
from tornado import httputil
from tornado.log import app_log
from typing_extensions import override

from server.cache import Freshness
from server.context import AppContext
from server.db.pool import database_unavailable
from server.domain import errors
from server.domain.principal import Principal
from server.http.bodylimit import declared_length
from server.http.fast.headers import canonical_name, headers_from, replayable
from server.services import permissions

log = logging.getLogger(__name__)

T = TypeVar("T")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_JSON_TYPES = ("application/json", "application/problem+json")
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_UNKNOWN_FIELD_RE = re.compile(r"unknown field `([^`]*)`")
_MISSING_FIELD_RE = re.compile(r"missing required field `([^`]*)`")
# `\u0000` preceded by an even number of backslashes: an escaped NUL, not an escaped backslash.
_NUL_ESCAPE_RE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_PATH_RE = re.compile(r"at `\$\.?([^`]*)`")

_CONTENT_TYPE = canonical_name("Content-Type")
_DATE = canonical_name("Date")
_REQUEST_ID = canonical_name("X-Request-ID")

PROBLEM_CONTENT_TYPE = "application/problem+json"
JSON_CONTENT_TYPE = "application/json"

_STATUS_OF: dict[type[errors.DomainError], int] = {
    errors.BadRequest: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.ValidationFailed: 422,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}


def status_of(error: errors.DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS_OF:
            return _STATUS_OF[cls]
    return 400


class ApiError(tornado.web.HTTPError):
    """An HTTP error carrying problem+json fields."""

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        errors_: list[errors.FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, log_message=None)
        self.detail = detail
        self.field_errors = errors_ or []
        self.extra_headers = headers or {}


_TOO_DEEP = object()


def _integral_floats(value: Any) -> Any:
    """`value` with every float that is a whole number (`2.0`, `1e3`) made an int."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _integral_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats(v) for v in value]
    return value


def problem(
    status: int, detail: str = "", field_errors: list[errors.FieldError] | None = None
) -> dict[str, Any]:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail or title,
    }
    if field_errors:
        body["errors"] = [e.as_problem() for e in field_errors]
    return body


def validation_errors(exc: msgspec.ValidationError) -> list[errors.FieldError]:
    """Turn msgspec's message ("Expected `int` - at `$.quantity`") into a field error."""
    message = str(exc)
    unknown = _UNKNOWN_FIELD_RE.search(message)
    if unknown:
        prefix = _PATH_RE.search(message)
        path = f"{prefix.group(1)}." if prefix and prefix.group(1) else ""
        return [errors.FieldError(path + unknown.group(1), "unknown or read-only field")]
    missing = _MISSING_FIELD_RE.search(message)
    if missing:
        prefix = _PATH_RE.search(message)
        path = f"{prefix.group(1)}." if prefix and prefix.group(1) else ""
        return [errors.FieldError(path + missing.group(1), "this field is required")]
    located = _PATH_RE.search(message)
    field = located.group(1) if located else ""
    text = message.split(" - at `", 1)[0]
    return [errors.FieldError(field or "body", text)]


def request_id_for(supplied: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new random one."""
    if supplied is not None and _REQUEST_ID_RE.match(supplied) is not None:
        return supplied
    return os.urandom(16).hex()


class _HttpDate:
    """The `Date` header, formatted once a second rather than once a request."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._text = second, httputil.format_timestamp(second)
        return self._text


_http_date = _HttpDate()
http_date = _http_date.now


class InFlight:
    """Counts requests being handled, so a graceful shutdown can wait for them."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, grace: float) -> None:
        """Return once no request is in flight, or after `grace` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)


class ApiHandler(tornado.web.RequestHandler):
    """Base of every JSON endpoint."""

    ctx: AppContext
    request_id: str
    # Who may call each method (services/permissions.py levels); every feature handler declares it.
    access: ClassVar[dict[str, str]] = {}
    # False for endpoints authenticated otherwise (signed webhooks): no per-IP/user budget.
    rate_limited: ClassVar[bool] = True
    # True where an account is made or a credential tried (register, login, refresh): the
    # client IP's budget is spent whatever token comes along, or any valid token would buy
    # unlimited sign-ups and password guesses from one address.
    budget_by_ip: ClassVar[bool] = False
    _principal: Principal | None
    _principal_resolved: bool
    _counted: bool = False
    _sticky_headers: dict[str, str] | None = None
    _replay_offer: dict[str, Any] | None = None

    @override
    def initialize(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._principal = None
        self._principal_resolved = False

    @override
    def clear(self) -> None:
        # As tornado's clear(), less its per-request Date formatting and its `Server: Tornado/x.y`
        # header (no reason to announce the version). The gateway's own headers are the same few
        # on every response, so they are composed directly rather than set (and re-checked) one by
        # one; see server/http/fast/headers.py.
        if not hasattr(self, "request_id"):
            # clear() runs again when an error replaces the response: the first id stays.
            self.request_id = request_id_for(self.request.headers.get("X-Request-ID"))
        pairs = [
            (_CONTENT_TYPE, JSON_CONTENT_TYPE),
            (_DATE, http_date()),
            *self.application.settings["security_headers"],
            (_REQUEST_ID, self.request_id),
        ]
        if self._sticky_headers:
            pairs.extend(self._sticky_headers.items())
        self._headers = headers_from(pairs)
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    @override
    def compute_etag(self) -> str | None:
        # Validators are set deliberately where they mean something (product reads); hashing
        # every GET body for an ETag nobody asked for is wasted work.
        return None

    @override
    def check_etag_header(self) -> bool:
        # Tornado only asks when the handler set no ETag, and then there is nothing to match
        # (compute_etag is None); handlers that set one answer If-None-Match themselves.
        return False

    def set_own_sticky_headers(self, headers: dict[str, str]) -> None:
        """`set_sticky_header` for headers the gateway composes itself: canonical names and plain
        token values (numbers), so the per-value checks of `set_header` are skipped."""
        if self._sticky_headers is None:
            self._sticky_headers = {}
        self._sticky_headers.update(headers)
        response = self._headers
        for name, value in headers.items():
            response[name] = value

    def add_vary(self, name: str) -> None:
        """Add `name` to the response's Vary (CORS may have set `Vary: Origin` already)."""
        current = self._headers.get("Vary")
        self.set_header("Vary", f"{current}, {name}" if current else name)

    def set_sticky_header(self, name: str, value: str) -> None:
        """Set a header that stays when an error replaces the response (rate limits, CORS)."""
        if self._sticky_headers is None:
            self._sticky_headers = {}
        self.set_header(name, value)  # checks the value
        self._sticky_headers[canonical_name(name)] = value

    @override
    async def prepare(self) -> None:
        self.application.settings["inflight"].enter()
        self._counted = True
        # The stock server drains an oversized body unread (http/bodylimit.py); the fast one answers
        # 413 itself before the body is read.
        declared = declared_length(self.request.headers)
        limit = self.ctx.settings.max_body_size
        if declared is not None and declared > limit:
            raise ApiError(413, f"request bodies are limited to {limit} bytes")
        hook = self.application.settings.get("before_request")
        if hook is not None:
            await hook(self)
        if self.request.method in _BODY_METHODS and self.request.body:
            content_type = self.request.headers.get("Content-Type", "")
            media = content_type.split(";", 1)[0].strip().lower()
            if media not in _JSON_TYPES and not media.endswith("+json"):
                raise ApiError(415, "request bodies must be application/json")
        # The route's declared access level, checked here for every handler (services/permissions);
        # a method a handler does not implement is Tornado's 405, whoever asks.
        level = self.access.get(self.request.method or "", "anyone")
        if level != "anyone" and not self._finished:
            permissions.check_access(level, self.principal)

    @override
    def on_finish(self) -> None:
        self._uncount()

    @override
    def on_connection_close(self) -> None:
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.application.settings["inflight"].leave()

    # ---- auth -------------------------------------------------------------------------------

    @property
    def principal(self) -> Principal | None:
        """The authenticated caller, or None for an anonymous request (invalid tokens raise 401)."""
        if not self._principal_resolved:
            self._principal = self._authenticate()
            self._principal_resolved = True
        return self._principal

    def _authenticate(self) -> Principal | None:
        header = self.request.headers.get("Authorization")
        if header is None:
            return None
        authenticator = self.application.settings["authenticator"]
        return authenticator(header)

    @property
    def caller(self) -> Principal:
        """The authenticated caller of a route whose declared access level needs one: prepare()
        has already refused everyone else (services/permissions.check_access)."""
        principal = self.principal
        if principal is None:  # only a route declared "anyone" gets here without a caller
            raise errors.Unauthenticated("authentication required")
        return principal

    # ---- JSON in and out --------------------------------------------------------------------

    def parse_body(self, struct_type: type[T]) -> T:
        """Decode and validate the body; 400 when it is not JSON, 422 when it does not fit."""
        body = self.request.body or b"{}"
        if _NUL_ESCAPE_RE.search(body):
            # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
            raise errors.ValidationFailed(
                "text cannot contain NUL characters",
                errors=[errors.FieldError("body", "a string contains \\u0000")],
            )
        try:
            return msgspec.json.decode(body, type=struct_type, strict=True)
        except msgspec.ValidationError as exc:
            failure = exc
        except msgspec.DecodeError:
            raise errors.BadRequest("the request body is not valid JSON") from None
        if "got `float`" in str(failure):
            # JSON Schema, and so the published document, counts `3.0` as an integer: accept
            # what it allows (only on this error path; fractions still fail).
            # msgspec parses it again, untyped: as strict about UTF-8 and lone surrogates as
            # the typed pass (the stdlib parser lets both through, and PostgreSQL refuses them).
            loose: Any = _TOO_DEEP
            try:
                loose = msgspec.json.decode(body)
            except msgspec.DecodeError:
                raise errors.BadRequest("the request body is not valid JSON") from None
            except RecursionError:
                pass  # too deep to walk: the first refusal stands
            if loose is not _TOO_DEEP:
                try:
                    return msgspec.convert(_integral_floats(loose), struct_type, strict=True)
                except msgspec.ValidationError as exc:
                    failure = exc
                except RecursionError:
                    pass
        raise errors.ValidationFailed(
            "the request body is invalid", errors=validation_errors(failure)
        ) from None

    def offer_replay(
        self, freshness: Freshness, on_replay: Callable[[], None] | None = None
    ) -> None:
        """Let the application answer this caller's next GETs of this target with this response,
        without a handler, while the data it was built from stays fresh (see
        server/http/fast/replay.py); each replay counts as a cache hit, then calls `on_replay`.
        Only for a response that depends on nothing but the target and the caller (anonymous,
        or the authenticated user). Taken up when a 200 JSON body is sent.
        """
        self._replay_offer = {"terms": freshness, "on_replay": on_replay}

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", JSON_CONTENT_TYPE)
        body = data if isinstance(data, bytes) else encode_json(data)
        if self._replay_offer is not None and status == 200:
            self._leave_for_replay(body)
        self.finish(body)

    def _leave_for_replay(self, body: bytes) -> None:
        replayer = self.application.settings.get("replayer")
        request = self.request
        if replayer is None or not replayable(request.method, request.uri, request.headers):
            return
        assert self._replay_offer is not None
        route = replayer.request_logger.templates.get(type(self))
        if route is None:
            return
        # The caller the handler resolved (None: anonymous): the offer is theirs only.
        principal = self._principal if self._principal_resolved else None
        user_id = principal.user_id if principal is not None else None
        if user_id is None and "Authorization" in request.headers:
            return  # credentials the handler never checked: not an anonymous answer
        replayer.responses.offer(
            (request.uri, user_id), route, list(self._headers.get_all()), body, **self._replay_offer
        )

    def send_empty(self, status: int = 204) -> None:
        self.set_status(status)
        self.finish()

    # ---- errors -----------------------------------------------------------------------------

    @override
    def _handle_request_exception(self, e: BaseException) -> None:
        # Domain errors are answers, not failures: map them here so both edges stay thin.
        if isinstance(e, errors.DomainError):
            self.send_domain_error(e)
            return
        if database_unavailable(e):
            log.warning(
                "%s %s: PostgreSQL unavailable (%r)", self.request.method, self.request.path, e
            )
            self.send_domain_error(errors.DATABASE_UNAVAILABLE)
            return
        super()._handle_request_exception(e)

    def send_domain_error(
        self, e: errors.DomainError, extra_headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer with the problem document of `e` (the one translation of domain errors)."""
        if self._finished:
            return
        status = status_of(e)
        headers: dict[str, str] = dict(extra_headers or {})
        if isinstance(e, errors.Unauthenticated):
            headers["WWW-Authenticate"] = 'Bearer realm="storefront"'
        elif isinstance(e, errors.RateLimited):
            headers["Retry-After"] = str(max(1, int(e.retry_after + 0.999)))
        elif isinstance(e, errors.Unavailable):
            headers["Retry-After"] = str(e.retry_after)
        self._write_problem(status, e.detail, e.errors, headers)

    @override
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        detail = ""
        field_errors: list[errors.FieldError] = []
        headers: dict[str, str] = {}
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ApiError):
            detail, field_errors, headers = exc.detail, exc.field_errors, exc.extra_headers
        elif isinstance(exc, tornado.web.MissingArgumentError):
            detail = exc.log_message or ""
        elif status_code >= 500:
            detail = "an unexpected error occurred; the request id identifies it in the logs"
        if status_code == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="storefront"')
        self._write_problem(status_code, detail, field_errors, headers)

    def _write_problem(
        self,
        status: int,
        detail: str,
        field_errors: list[errors.FieldError],
        headers: dict[str, str],
    ) -> None:
        self.clear()
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", PROBLEM_CONTENT_TYPE)
        self.finish(orjson.dumps(problem(status, detail, field_errors)))

    @override
    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ApiError, errors.DomainError)):
            return
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)  # a warning line, through _request_summary
            return
        # Tornado's own line would also print repr(request), query string and all (a
        # stream's access_token): the path only, as the access log does.
        app_log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))

    @override
    def _request_summary(self) -> str:
        request = self.request
        return f"{request.method} {request.path} ({request.remote_ip})"


def encode_json(data: Any) -> bytes:
    return orjson.dumps(data, default=_encode_default)


def _encode_default(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


class NotFoundHandler(ApiHandler):
    """Default handler: problem+json 404 for unknown routes."""

    @override
    async def prepare(self) -> None:
        raise ApiError(404, f"no route matches {self.request.path}")
