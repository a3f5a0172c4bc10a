"""server/http/headers.py: header sets built without Tornado's per-name work, same behaviour."""

from __future__ import annotations

from tornado import httputil

from server.http.headers import FAST_LAYOUT, RequestHeaders, canonical_name, headers_from


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
