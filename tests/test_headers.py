"""server/http/fast/headers.py: header sets built without Tornado's per-name work, same result."""

from __future__ import annotations

from tornado import httputil

from server.http.fast.headers import (
    FAST_LAYOUT,
    RequestHeaders,
    canonical_name,
    headers_from,
    replayable,
)


def test_this_tornado_keeps_the_layout_the_fast_paths_fill() -> None:
    # If an upgrade changes HTTPHeaders, the helpers fall back to the public API; this test
    # says so loudly instead of the gateway silently getting slower.
    assert FAST_LAYOUT


def test_composed_headers_behave_like_tornado_headers() -> None:
    pairs = [(canonical_name("content-type"), "application/json"), ("X-Request-Id", "abc")]
    composed = headers_from(pairs)
    reference = httputil.HTTPHeaders()
    for name, value in pairs:
        reference[name] = value
    composed.add("vary", "Origin")
    reference.add("vary", "Origin")
    composed.add("Vary", "Accept")
    reference.add("Vary", "Accept")
    assert sorted(composed.get_all()) == sorted(reference.get_all())
    assert composed["VARY"] == "Origin,Accept" and composed.get("x-request-id") == "abc"


def test_request_headers_get_matches_mapping_get() -> None:
    headers = RequestHeaders.__new__(RequestHeaders)
    headers._as_list = {"X-Forwarded-For": ["10.0.0.1", "10.0.0.2"], "Accept": [""]}
    headers._combined_cache = {"Accept": ""}
    assert headers.get("x-forwarded-for") == "10.0.0.1,10.0.0.2"
    assert headers.get("Accept") == ""  # present but empty is not absent
    assert headers.get("Origin") is None and headers.get("Origin", "-") == "-"
    assert headers.get_list("X-Forwarded-For") == ["10.0.0.1", "10.0.0.2"]


def test_only_plain_gets_are_replayable() -> None:
    def headers(**values: str) -> httputil.HTTPHeaders:
        h = httputil.HTTPHeaders({"Host": "shop.test:8000"})
        for name, value in values.items():
            h[name.replace("_", "-")] = value
        return h

    path = "/api/v1/products/1"
    assert replayable("GET", path, headers())
    assert replayable("GET", path, headers(Authorization="Bearer x"))  # kept per caller
    assert not replayable("HEAD", path, headers())
    assert not replayable("GET", path + "?a=1", headers())
    for name in ("Origin", "If-None-Match", "If-Modified-Since", "Content-Length", "Expect"):
        assert not replayable("GET", path, headers(**{name: "1"})), name
    assert not replayable("GET", path, headers(Transfer_Encoding="chunked"))
    assert not replayable("GET", path, httputil.HTTPHeaders())  # no Host: Tornado's 400
    for host in ("a,b", "shop test", "h:123456"):
        assert not replayable("GET", path, httputil.HTTPHeaders({"Host": host})), host
