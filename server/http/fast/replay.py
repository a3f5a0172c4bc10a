"""Replaying GET responses without building a RequestHandler.

A cached product page costs the gateway far more in Tornado's request machinery (request object,
routing, handler, task, finish) than in finding its bytes. So when a handler answers a GET with a
response every GET of that target by that caller would get, it may *offer* it
(`ApiHandler.offer_replay`):
the application keeps the status-200 body and the response's own headers under the request target
while the data behind them is unchanged (`Terms.still_valid`, e.g. the product cache's namespace
version) and for at most `max_age` seconds.

An offer made for an authenticated caller (`/auth/me`) is kept for that user id only and replayed
only to a request whose bearer token verifies (in Rust, as the handler would) to the same user; an
anonymous offer only to requests without credentials.

The next request for that target and caller that could not be answered differently (a GET
without a query, a body, CORS `Origin` or conditional headers; see `replayable`) is answered from
there, and still goes through the per-request work of the handler path, by the same functions: the
token check, the rate limit (its refusal is left to the handler, which answers 429), a request id,
`Date`, `RateLimit-*` headers, the HTTP metrics and the access-log line, and the offer's own
`on_replay` (the product view counter, the cache hit count). Anything else (a miss, a stale entry,
a refusal) is handed to Tornado's routing exactly as if this module did not exist. Both HTTP
connections get it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tornado import httputil
from tornado.log import app_log

from server.domain.errors import Unauthenticated
from server.domain.principal import Principal
from server.http.base import InFlight, http_date, request_id_for
from server.http.edge import LIMITED_PREFIX, request_budget
from server.http.fast.headers import canonical_name, headers_from, replayable
from server.observability import RequestLogger
from server.ratelimit import Decision, Network, RequestLimiter, Scope

if TYPE_CHECKING:
    from collections.abc import Sequence

# Response headers that differ per request: left out of the offer, written fresh on each replay.
_DATE = canonical_name("Date")
_REQUEST_ID = canonical_name("X-Request-ID")
_CONTENT_LENGTH = canonical_name("Content-Length")
_RATE_HEADERS = {
    canonical_name(name): name
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
}
_PER_REQUEST = frozenset((_DATE, _REQUEST_ID, _CONTENT_LENGTH, *_RATE_HEADERS))
_OK = httputil.ResponseStartLine("", 200, "OK")


class Terms(Protocol):
    """How long an offer stands (server.cache.Freshness is one)."""

    def expires_at(self, now: float) -> float:
        """When an offer made at `now` stops standing."""
        ...

    def still_valid(self) -> bool: ...

    def count_hit(self) -> None:
        """Called for each replay (it is a cache hit)."""


@dataclass(slots=True)
class Replay:
    # Few objects per entry: there are up to max_entries of them, and every full garbage
    # collection walks them all (an offer that held its handler cost ~45 objects each).
    route: str  # the route template, for metrics
    headers: tuple[tuple[str, str], ...]  # the response's own headers, in their order
    body: bytes
    expires: float  # time.monotonic()
    terms: Terms
    on_replay: Callable[[], None] | None


Key = tuple[str, int | None]  # (request target, the caller's user id; None: anonymous)


class ReplayCache:
    """Offered responses by request target and caller; bounded, least recently used out first."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, Replay] = OrderedDict()
        self._per_target: dict[str, int] = {}  # entries per target: most targets have none

    def offer(
        self,
        key: Key,
        route: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        terms: Terms,
        on_replay: Callable[[], None] | None = None,
    ) -> None:
        kept = tuple((name, value) for name, value in headers if name not in _PER_REQUEST)
        entry = Replay(route, kept, body, terms.expires_at(time.monotonic()), terms, on_replay)
        if key not in self._entries:
            self._per_target[key[0]] = self._per_target.get(key[0], 0) + 1
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._forget(next(iter(self._entries)))

    def has_target(self, target: str) -> bool:
        return target in self._per_target

    def get(self, key: Key) -> Replay | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= time.monotonic() or not entry.terms.still_valid():
            self._forget(key)
            return None
        return entry

    def _forget(self, key: Key) -> None:
        del self._entries[key]
        left = self._per_target[key[0]] - 1
        if left:
            self._per_target[key[0]] = left
        else:
            del self._per_target[key[0]]

    def __len__(self) -> int:
        return len(self._entries)


class Replayer:
    """The offered responses and what answering one needs: the limiter, the proxies trusted for
    the client address, the request logger, the in-flight count."""

    def __init__(
        self,
        authenticator: Callable[[str], Principal],
        limiter: RequestLimiter,
        trusted_proxies: Sequence[Network],
        request_logger: RequestLogger,
        inflight: InFlight,
        max_entries: int = 10_000,
    ) -> None:
        self.responses = ReplayCache(max_entries)
        self.authenticator = authenticator
        self.limiter = limiter
        self.trusted_proxies = trusted_proxies
        self.request_logger = request_logger
        self.inflight = inflight

    def caller(self, headers: httputil.HTTPHeaders) -> int | Unauthenticated | None:
        """The user id an Authorization header proves (None without one), or the refusal."""
        header = headers.get("Authorization")
        if header is None:
            return None
        try:
            return self.authenticator(header).user_id
        except Unauthenticated as refused:
            return refused

    def budget(
        self,
        path: str,
        user_id: int | None,
        headers: httputil.HTTPHeaders,
        connection: httputil.HTTPConnection,
    ) -> tuple[Scope, str] | None:
        """The rate budget to spend, as the edge hook picks it; None when none is spent."""
        if not self.limiter.enabled or not path.startswith(LIMITED_PREFIX):
            return None
        remote_ip = getattr(getattr(connection, "context", None), "remote_ip", None)
        return request_budget(user_id, remote_ip, headers, self.trusted_proxies)


class ReplayingDelegate(httputil.HTTPMessageDelegate):
    """What the application hands a connection for each request: answers a replayable request
    from the `ReplayCache`, and hands every other one to Tornado's routing delegate."""

    def __init__(
        self,
        replayer: Replayer,
        request_conn: httputil.HTTPConnection,
        route: Callable[[], httputil.HTTPMessageDelegate],
    ) -> None:
        self.replayer = replayer
        self.connection = request_conn
        self._route = route
        self._inner: httputil.HTTPMessageDelegate | None = None
        self._entry: Replay | None = None
        self._start_line: httputil.RequestStartLine | None = None
        self._headers: httputil.HTTPHeaders | None = None
        self._started = 0.0
        self._user_id: int | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        target = start_line.path
        responses = self.replayer.responses
        if responses.has_target(target) and replayable(start_line.method, target, headers):
            user_id = self.replayer.caller(headers)
            # A refused token is the handler's to answer (401, charged to the address).
            if not isinstance(user_id, Unauthenticated):
                entry = responses.get((target, user_id))
                if entry is not None:
                    self._entry, self._start_line, self._headers = entry, start_line, headers
                    self._user_id = user_id
                    self._started = time.time()
                    return None
        self._inner = self._route()
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._inner is None:  # pragma: no cover - replayable requests have no body
            self._hand_over()
        assert self._inner is not None
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        if self._inner is not None:
            self._inner.finish()
            return
        assert self._entry is not None and self._start_line is not None
        assert self._headers is not None
        replayer = self.replayer
        budget = replayer.budget(
            self._start_line.path, self._user_id, self._headers, self.connection
        )
        if budget is None:
            self._answer(self._entry, None)
            return
        decision = replayer.limiter.try_spend_local(*budget)
        if decision is not None:
            self._answer_or_hand_over(self._entry, decision)
            return
        # Budgets shared through Redis: wait for the decision, as the handler would.
        replayer.inflight.enter()
        task = asyncio.ensure_future(replayer.limiter.try_spend(*budget))
        task.add_done_callback(self._decided)

    def on_connection_close(self) -> None:
        if self._inner is not None:
            self._inner.on_connection_close()

    # ---- answering ------------------------------------------------------------------------

    def _decided(self, done: asyncio.Future[Decision]) -> None:
        try:
            assert self._entry is not None
            if done.cancelled() or done.exception() is not None:
                self._hand_over_and_finish()  # the handler path deals with it
            else:
                self._answer_or_hand_over(self._entry, done.result())
        except Exception:  # pragma: no cover - defensive: logged like a handler's failure
            app_log.error("Uncaught exception while replaying a response", exc_info=True)
        finally:
            self.replayer.inflight.leave()

    def _answer_or_hand_over(self, entry: Replay, decision: Decision) -> None:
        if decision.allowed:
            self._answer(entry, decision)
        else:
            self._hand_over_and_finish()  # the handler checks again and answers 429

    def _answer(self, entry: Replay, decision: Decision | None) -> None:
        assert self._headers is not None and self._start_line is not None
        request_id = request_id_for(self._headers.get("X-Request-ID"))
        pairs = [*entry.headers, (_DATE, http_date()), (_REQUEST_ID, request_id)]
        if decision is not None:
            rate = decision.headers()
            pairs.extend((name, rate[original]) for name, original in _RATE_HEADERS.items())
        pairs.append((_CONTENT_LENGTH, str(len(entry.body))))
        self.connection.write_headers(_OK, headers_from(pairs), entry.body)
        self.connection.finish()
        entry.terms.count_hit()
        if entry.on_replay is not None:
            entry.on_replay()
        self.replayer.request_logger.record(
            "GET",
            self._start_line.path,
            entry.route,
            200,
            time.time() - self._started,
            request_id,
            self._user_id,
        )

    def _hand_over(self) -> None:
        assert self._start_line is not None and self._headers is not None
        self._entry = None
        self._inner = self._route()
        waiting = self._inner.headers_received(self._start_line, self._headers)
        if waiting is not None:  # pragma: no cover - only streaming handlers wait here
            raise RuntimeError("a replayable route must not stream its request body")

    def _hand_over_and_finish(self) -> None:
        self._hand_over()
        assert self._inner is not None
        self._inner.finish()
