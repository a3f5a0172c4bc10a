"""Building `tornado.httputil.HTTPHeaders` without re-normalising names already in canonical form.

Tornado >= 6.5 keeps a header set in two dicts, `_as_list` (name -> values) and
`_combined_cache` (name -> joined value, filled lazily). Filling them directly skips the name
normalisation and value checks of `__setitem__` for headers the gateway itself composes (the same
few on every response); `FAST_LAYOUT` says whether this Tornado keeps that layout, and every
helper falls back to the public API when it does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tornado import httputil


def _layout_known() -> bool:
    try:
        h = httputil.HTTPHeaders()
        h["X-A"] = "1"
        h.add("x-a", "2")
        probe = httputil.HTTPHeaders.__new__(httputil.HTTPHeaders)
        probe._as_list = {"X-B": ["3", "4"]}
        probe._combined_cache = {}
        return (
            set(vars(h)) == {"_as_list", "_combined_cache"}
            and h._as_list == {"X-A": ["1", "2"]}
            and probe["x-b"] == "3,4"
            and list(probe.get_all()) == [("X-B", "3"), ("X-B", "4")]
        )
    except Exception:  # pragma: no cover - depends on the tornado version
        return False


FAST_LAYOUT = _layout_known()
canonical_name = httputil._normalize_header


def headers_from(pairs: Iterable[tuple[str, str]]) -> httputil.HTTPHeaders:
    """A header set of one value per name; names must be canonical (`canonical_name`) and values
    already valid header text (they are the gateway's own, not a caller's)."""
    if not FAST_LAYOUT:
        headers = httputil.HTTPHeaders()
        for name, value in pairs:
            headers[name] = value
        return headers
    headers = httputil.HTTPHeaders.__new__(httputil.HTTPHeaders)
    combined = dict(pairs)
    headers._combined_cache = combined
    headers._as_list = {name: [value] for name, value in combined.items()}
    return headers


class RequestHeaders(httputil.HTTPHeaders):
    """Request headers as the fast connection builds them (in the layout above).

    `get` of an absent name returns the default without raising and catching a KeyError, which
    is what `Mapping.get` does; handlers ask for absent headers (Origin, Authorization,
    If-None-Match, X-Request-ID ...) several times on every request.
    """

    def get(self, name: str, default: Any = None) -> Any:
        norm = canonical_name(name)
        value = self._combined_cache.get(norm)
        if value is not None:
            return value
        if norm not in self._as_list:
            return default
        return self[norm]


# Request headers that could change a GET's answer (CORS, conditionals, a body). Credentials are
# not among them: a replay is kept per verified caller (server/http/fast/replay.py).
_VARIES_ANSWER = tuple(
    canonical_name(name)
    for name in (
        "Origin",
        "If-None-Match",
        "If-Modified-Since",
        "Content-Length",
        "Transfer-Encoding",
        "Expect",
    )
)


_VARIES_ANSWER_SET = frozenset(_VARIES_ANSWER)

# A plain Host (name or address, optional port). Anything else goes to the handler path, where
# Tornado's request object validates it (and refuses a missing or repeated Host with 400).
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


def replayable(method: str | None, uri: str | None, headers: httputil.HTTPHeaders) -> bool:
    """Whether a request can only get the answer any GET of its target by the same caller gets: a
    GET with a plain Host and without a query, CORS, conditional or body headers
    (server/http/fast/replay.py)."""
    if method != "GET" or not uri or "?" in uri:
        return False
    host = headers.get("Host")
    if host is None or _PLAIN_HOST.fullmatch(host) is None:
        return False
    if FAST_LAYOUT:  # the names are canonical already: one set intersection
        return not _VARIES_ANSWER_SET.intersection(headers._as_list)
    return not any(name in headers for name in _VARIES_ANSWER)
