"""Probes, unknown routes and the headers every response carries."""

from __future__ import annotations

from tests.conftest import ApiClient


async def test_liveness_answers_ok(api: ApiClient) -> None:
    response = await api.get("/healthz")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_checks_the_database(api: ApiClient) -> None:
    response = await api.get("/readyz")
    assert response.status == 200
    assert response.json()["checks"] == {"database": "ok"}


async def test_unknown_route_is_problem_json_404(api: ApiClient) -> None:
    response = await api.get("/api/v1/nowhere")
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404 and body["title"] == "Not Found" and body["type"]


async def test_security_headers_on_every_response(api: ApiClient) -> None:
    for path in ("/healthz", "/api/v1/nowhere"):
        response = await api.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Strict-Transport-Security" not in response.headers  # production only


async def test_request_id_is_echoed_when_sane(api: ApiClient) -> None:
    response = await api.get("/healthz", headers={"X-Request-ID": "abc-123.def"})
    assert response.headers["X-Request-ID"] == "abc-123.def"


async def test_request_id_is_replaced_when_not_sane(api: ApiClient) -> None:
    response = await api.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces" * 20})
    generated = response.headers["X-Request-ID"]
    assert generated and " " not in generated and len(generated) == 32


async def test_trailing_slash_is_accepted(api: ApiClient) -> None:
    assert (await api.get("/healthz/")).status == 200


async def test_responses_carry_a_date_and_no_server_banner(api: ApiClient) -> None:
    from email.utils import parsedate_to_datetime

    response = await api.get("/healthz")
    assert parsedate_to_datetime(response.headers["Date"]).tzinfo is not None
    assert "Server" not in response.headers
    assert "Etag" not in response.headers  # validators only where they mean something
