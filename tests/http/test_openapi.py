"""The published OpenAPI document: it describes every route, real responses fit it, and a
schemathesis run over it finds no server error and no schema violation. Also the docs pages."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from typing import Any

import hypothesis
import hypothesis.errors
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from server import openapi
from server.app import feature_routes
from server.domain.values import MAX_CHARGE, MAX_PRICE, MAX_QUANTITY
from tests.conftest import ApiClient, UserFactory

# Every route declares its `api` spec; nothing may fall back to the generic entry.
KNOWN_UNDOCUMENTED = re.compile(r"^$")
# Not the live stream: a request/response fuzzer would wait on it; tests/http/test_stream.py.
FUZZED_PATHS = r"^/api/v1/(?!stream)|^/api/(schema|docs|redoc)|^/(healthz|readyz)"
HOP_BY_HOP = frozenset(("transfer-encoding", "content-length", "connection", "te", "upgrade"))
# Per operation and mode (positive, negative): about 20 s for the whole run.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
CSP = re.compile(r"script-src 'self'(;|$)")


@pytest.fixture(scope="module")
async def admin(make_user: UserFactory) -> str:
    _, token = await make_user.create("admin")
    return token


@pytest.fixture(scope="module")
async def document(api: ApiClient) -> dict[str, Any]:
    response = await api.get("/api/schema")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def validator(
    document: dict[str, Any], path: str, method: str, status: int
) -> jsonschema_rs.Validator:
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    schema = content["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": document["components"]}, validate_formats=True
    )


def test_document_is_openapi_31_with_money_rounding(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert "half-even" in document["info"]["description"]
    assert "per line" in document["info"]["description"]
    assert "Product" in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_document_states_the_rules_the_handlers_enforce(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    currency = schemas["ProductCreate"]["properties"]["currency"]["anyOf"][0]
    assert currency["enum"] == ["USD"]  # the store currency of the running gateway
    assert openapi.build_document(feature_routes(), "EUR")["components"]["schemas"][
        "ProductUpdate"
    ]["properties"]["currency"]["enum"] == ["EUR"]
    assert schemas["LoginBody"]["properties"]["email"]["pattern"] == openapi.NO_NUL_PATTERN
    cursor = next(
        p
        for p in document["paths"]["/api/v1/products"]["get"]["parameters"]
        if p["name"] == "cursor"
    )
    assert cursor["schema"]["pattern"] == openapi.NO_CONTROL_PATTERN
    kinds = [b["properties"]["kind"]["const"] for b in schemas["PromotionCreate"]["anyOf"]]
    assert kinds == ["percent", "fixed", "buy_x_get_y"]
    assert {"required": ["slug"]}.items() <= schemas["CategoryCreate"]["anyOf"][0].items()


def test_money_ids_and_quantities_have_one_definition_across_the_api() -> None:
    """Prices and amounts off (products, variants, promotions) share server/domain/values.py's
    Money bounds, the amounts a payment moves (captures, refunds) its Charge bounds, and the lines
    a request sends its Quantity bounds: none is retyped apart."""
    schemas = openapi.build_document(feature_routes(), "USD")["components"]["schemas"]

    def integer_of(schema: dict[str, Any]) -> dict[str, Any]:
        branches = schema.get("anyOf", [schema])
        found = next(b for b in branches if b.get("type") == "integer")
        return {k: v for k, v in found.items() if k != "default"}

    money = {"description": "minor units", "type": "integer", "minimum": 0, "maximum": MAX_PRICE}
    for component, field in [
        ("ProductCreate", "price"),
        ("ProductUpdate", "price"),
        ("VariantCreate", "price"),
        ("VariantUpdate", "price"),
        ("PromotionCreate", "min_subtotal"),
        ("PromotionUpdate", "min_subtotal"),
    ]:
        assert integer_of(schemas[component]["properties"][field]) == money, component
    charge = {"description": "minor units", "type": "integer", "minimum": 1, "maximum": MAX_CHARGE}
    for component in ("PaymentCapture", "RefundCreate"):
        assert integer_of(schemas[component]["properties"]["amount"]) == charge, component
    quantity = {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}
    for component in ("CartItemAdd", "RestockItem"):  # the lines a request sends
        assert integer_of(schemas[component]["properties"]["quantity"]) == quantity, component
    setting = integer_of(schemas["CartItemUpdate"]["properties"]["quantity"])
    assert (setting["minimum"], setting["maximum"]) == (0, MAX_QUANTITY)  # 0 removes the line


def test_every_route_and_method_is_in_the_document(document: dict[str, Any]) -> None:
    for pattern, handler in feature_routes():
        if pattern.startswith("/api/docs/static"):
            continue
        path, _ = openapi.openapi_path(pattern)
        for method in ("get", "post", "put", "patch", "delete"):
            implemented = getattr(handler, method) is not getattr(
                openapi.tornado.web.RequestHandler, method
            )
            assert (method in document["paths"].get(path, {})) == implemented, (path, method)


def test_only_known_routes_lack_a_spec(document: dict[str, Any]) -> None:
    undocumented = document["x-undocumented-operations"]
    assert [op for op in undocumented if not KNOWN_UNDOCUMENTED.match(op)] == []


def test_specs_carry_access_and_automatic_errors(document: dict[str, Any]) -> None:
    create = document["paths"]["/api/v1/products"]["post"]
    assert create["security"] == [{"bearerAuth": []}]
    assert {"201", "400", "401", "403", "409", "413", "415", "422", "429"} <= set(
        create["responses"]
    )
    listing = document["paths"]["/api/v1/products"]["get"]
    assert "401" in listing["responses"]  # open to anyone, but a bad bearer token is a 401
    assert {p["name"] for p in listing["parameters"]} == {
        "category",
        "q",
        "min_price",
        "max_price",
        "in_stock",
        "option",
        "sort",
        "limit",
        "cursor",
    }
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    product = document["paths"]["/api/v1/products/{product_id}"]["get"]
    assert product["parameters"][0]["schema"]["type"] == "integer"
    assert {"ETag", "Cache-Control"} <= set(product["responses"]["200"]["headers"])
    body = document["components"]["schemas"]["ProductCreate"]
    assert body["additionalProperties"] is False
    # `stock` without variants, `variants` (each with its stock) otherwise.
    assert set(body["required"]) == {"sku", "name", "price"}
    assert body["oneOf"] == [
        {"required": ["stock"], "not": {"required": ["variants"]}},
        {"required": ["variants"], "not": {"required": ["stock"]}},
    ]


async def test_real_responses_fit_the_schema(
    api: ApiClient, admin: str, document: dict[str, Any]
) -> None:
    created = await api.post(
        "/api/v1/products",
        token=admin,
        json={"sku": f"OAS-{uuid.uuid4().hex[:8]}", "name": "Schema mug", "price": 999, "stock": 3},
    )
    validator(document, "/api/v1/products", "post", 201).validate(created.json())
    product = created.json()
    got = await api.get(f"/api/v1/products/{product['id']}")
    validator(document, "/api/v1/products/{product_id}", "get", 200).validate(got.json())
    listed = await api.get("/api/v1/products?limit=1")
    validator(document, "/api/v1/products", "get", 200).validate(listed.json())
    await api.post(
        "/api/v1/cart/items", json={"product_id": product["id"], "quantity": 2}, token=admin
    )
    cart = await api.get("/api/v1/cart", token=admin)
    assert cart.json()["items"]
    validator(document, "/api/v1/cart", "get", 200).validate(cart.json())
    promo = await api.post(
        "/api/v1/promotions",
        token=admin,
        json={
            "code": f"OAS{uuid.uuid4().hex[:6]}",
            "kind": "percent",
            "value": 5,
            "ends_at": "2099-01-01T00:00:00Z",
        },
    )
    validator(document, "/api/v1/promotions", "post", 201).validate(promo.json())
    stats = await api.get("/api/v1/stats/orders", token=admin)
    validator(document, "/api/v1/stats/orders", "get", 200).validate(stats.json())
    # A problem answer fits the Problem schema too.
    missing = await api.get("/api/v1/products/999999999")
    problem = {
        **document["components"]["responses"]["Problem404"]["content"]["application/problem+json"][
            "schema"
        ],
        "components": document["components"],
    }
    jsonschema_rs.Draft202012Validator(problem).validate(missing.json())
    # And the validator really checks: a wrong shape is refused.
    assert not validator(document, "/api/v1/cart", "get", 200).is_valid(
        {**cart.json(), "total": "12"}
    )


@pytest.mark.parametrize(
    ("path", "asset"),
    [
        ("/api/docs", "/api/docs/static/swagger-ui/swagger-ui-bundle.js"),
        ("/api/redoc", "/api/docs/static/redoc.standalone.js"),
    ],
)
async def test_docs_pages_are_served_locally_with_a_csp(
    api: ApiClient, path: str, asset: str
) -> None:
    page = await api.get(path)
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert CSP.search(page.headers["Content-Security-Policy"])
    html = page.body.decode()
    assert asset in html and "https://" not in html and "<script>" not in html
    script = await api.get(asset)
    assert script.status == 200 and len(script.body) > 100_000
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert (await api.get("/api/docs/static/swagger-init.js")).body.count(b"/api/schema") == 1


@pytest.mark.parametrize(
    "asset",
    [
        "/api/docs/static/swagger-ui/swagger-ui-bundle.js",
        "/api/docs/static/swagger-ui/swagger-ui.css",
        "/api/docs/static/redoc.standalone.js",
        "/api/docs/static/no-such-file.js",
    ],
)
async def test_docs_assets_carry_the_request_id_and_security_headers(
    api: ApiClient, asset: str
) -> None:
    """Every response is traceable, the UIs' files and their 404s and 304s included."""
    fresh = await api.get(asset)
    assert fresh.status in (200, 404)
    assert len(fresh.headers["X-Request-ID"]) >= 16
    assert fresh.headers["X-Content-Type-Options"] == "nosniff"
    echoed = await api.get(asset, headers={"X-Request-ID": "trace-docs-asset-1"})
    assert echoed.headers["X-Request-ID"] == "trace-docs-asset-1"
    if fresh.status == 200:
        again = await api.get(asset, headers={"If-None-Match": fresh.headers["Etag"]})
        assert again.status == 304 and len(again.headers["X-Request-ID"]) >= 16


# Refusals of schema-valid data that no schema can prevent, as (operation or "*", field,
# status): they depend on stored state or compare two fields, which JSON Schema cannot say.
NOT_STATABLE = {
    ("*", "cursor", 400),  # opaque: only a cursor the server issued continues a list
    ("*", "ends_at", 422),  # must be after starts_at
    ("*", "parent_id", 422),  # names a category that does not exist
    ("*", "category_id", 422),  # likewise
    ("POST /api/v1/orders", "items", 422),  # the cart is empty
    # A PATCH that fits the schema by itself can still clash with the stored promotion.
    *(
        ("PATCH /api/v1/promotions/{promotion_id}", f, 422)
        for f in ("value", "buy_quantity", "get_quantity", "usage_limit")
    ),
    # Variants must give one value of each of the product's options, option names must be
    # distinct across the list, and a product with options needs its variants: rules between
    # values, which JSON Schema cannot state.
    ("POST /api/v1/products", "options", 422),
    ("POST /api/v1/products", "variants", 422),
    ("POST /api/v1/products", "variants[*].options", 422),
    ("PATCH /api/v1/products/{product_id}", "options", 422),
    ("PATCH /api/v1/products/{product_id}", "stock", 422),  # several variants: set each one's
    ("POST /api/v1/products/{product_id}/variants", "options", 422),
    ("PATCH /api/v1/products/{product_id}/variants/{variant_id}", "options", 422),
    ("GET /api/v1/products", "option", 400),  # two values for one option
    # Which variant a cart line means depends on the product (several variants? these options?).
    *(("POST /api/v1/cart/items", f, 422) for f in ("product_id", "variant_id", "options")),
    ("PATCH /api/v1/cart/items/{product_id}", "variant_id", 422),
    ("DELETE /api/v1/cart/items/{product_id}", "variant_id", 422),
    # What can be restocked or captured depends on the order and the payment.
    ("POST /api/v1/orders/{order_id}/refunds", "items[*].variant_id", 422),
    ("POST /api/v1/orders/{order_id}/refunds", "items[*].quantity", 422),
    ("POST /api/v1/orders/{order_id}/refunds", "items", 422),
    ("POST /api/v1/payments/{payment_id}/capture", "amount", 422),
}


def _not_statable(operation: str, field: str, status: int) -> bool:
    """Whether NOT_STATABLE covers this refusal (`*` in a field stands for any text)."""
    return any(
        op in ("*", operation)
        and code == status
        and re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), field) is not None
        for op, pattern, code in NOT_STATABLE
    )


def schema_valid_data_is_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> Any:
    if response.status_code == 402:
        return None  # a declined card is the answer to a well-formed payment
    if response.status_code in (400, 422):
        try:
            fields = {e["field"] for e in response.json().get("errors", [])}
        except (ValueError, AttributeError):
            fields = set()
        operation = f"{case.method.upper()} {case.path}"
        if fields and all(_not_statable(operation, f, response.status_code) for f in fields):
            return None
    return positive_data_acceptance(ctx, response, case)


def fuzz(document: dict[str, Any], base_url: str, token: str) -> list[str]:
    """Schemathesis over our operations, positive and negative data; returns the failures."""
    schema = schemathesis.openapi.from_dict(document).include(path_regex=FUZZED_PATHS)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        # Data the schema calls valid must not be refused as malformed (400/422): the document
        # states every constraint the handlers enforce.
        schema_valid_data_is_accepted,
    ]
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                # Framing headers belong to the connection (its own tests cover them), not to
                # the API: a fuzzed Transfer-Encoding is refused before any route is chosen.
                for name in list(case.headers or {}):
                    if name.lower() in HOP_BY_HOP:
                        del case.headers[name]  # type: ignore[union-attr]
                case.call_and_validate(
                    base_url=base_url,
                    checks=checks,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                )

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to make invalid (no parameters, no body)
            except (Exception, BaseExceptionGroup) as exc:  # collect all, then report
                failures.append(
                    f"{operation.method.upper()} {operation.path} [{mode.value}]: {exc}"[:2000]
                )
    return failures


@pytest.mark.timeout(120)
async def test_schemathesis_finds_no_server_error_or_schema_violation(
    api: ApiClient, admin: str, document: dict[str, Any]
) -> None:
    # The gateway runs on this loop: fuzz from a thread so the loop keeps serving.
    failures = await asyncio.to_thread(fuzz, document, api.base_url, admin)
    assert not failures, "\n\n".join(failures)
