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


async def test_a_nul_character_in_a_body_is_a_422_not_a_database_error(api: ApiClient) -> None:
    response = await api.post(
        "/api/v1/auth/register",
        json={"email": "nul@example.com", "password": "long enough pw", "name": "a\x00b"},
    )
    assert response.status == 422, response
    assert response.json()["errors"][0]["field"] == "body"


async def test_a_nul_character_in_a_query_is_not_a_server_error(api: ApiClient) -> None:
    for path in (
        "/api/v1/products?q=%00",
        "/api/v1/products?category=%00",
        "/api/v1/orders?cursor=%00",
    ):
        response = await api.get(path)
        assert response.status < 500, (path, response)
