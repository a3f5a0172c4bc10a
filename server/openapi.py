"""OpenAPI 3.1 of the whole REST surface, built from the route table and the handlers' own specs.

How a handler describes itself (every feature module does it this way)
----------------------------------------------------------------------
A handler class carries `api: ClassVar[dict[str, Operation]]`, keyed by HTTP method, next to
its `access` table:

    from server.openapi import Operation, Param

    class ProductHandler(ApiHandler):
        access: ClassVar[dict[str, str]] = {"GET": "anyone", "PATCH": "admin"}
        api: ClassVar[dict[str, Operation]] = {
            "GET": Operation("Get a product", response=Product, errors=(404,)),
            "PATCH": Operation("Update a product", request=ProductUpdate, response=Product),
        }

- `request` / `response`: the msgspec Structs (or any type msgspec can describe, e.g.
  `list[X]`) that the handler really decodes with `parse_body` and encodes. Schemas come from
  `msgspec.json.schema_components`, so the document cannot drift from the validation.
- `status`: the success status (201 for creates; 204 with `response=None`).
- `query`: `Param`s. `read_query(handler, params)` parses the query string with the same
  declaration (malformed → 400), so docs and parsing agree.
- `errors`: problem+json statuses beyond the ones derived automatically, which are:
  401 for any `access` other than "anyone", 403 for "admin"/"staff"/"owner", 404 when the path
  has parameters, 413/415/422 with a request body, and 400/429/503 everywhere (400 also covers
  malformed HTTP framing, which the connection refuses before any handler runs).
- `also`: bodiless extra responses (e.g. `{304: "not modified"}`); `headers`: documented
  response headers of the success response; `content_type` for non-JSON pages.
- Path parameters come from the route regex's groups: `(?P<product_id>[0-9]+)` becomes
  `{product_id}`; an unnamed group takes the previous segment's name (`/orders/([0-9]+)` →
  `{order_id}`). Digit groups (`[0-9]+`, `\\d{1,18}`...) are integers, others strings.

Static-file routes are left out. Routes without a spec still appear, with a generic operation
(`x-undocumented: true`), listed in the document's `x-undocumented-operations`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import tornado.web

from server.domain.errors import BadRequest, FieldError

OPENAPI_VERSION = "3.1.0"
API_TITLE = "Storefront Gateway"
API_VERSION = "1.0.0"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# A capture group, named or not, whose body has no nested groups.
_GROUP_RE = re.compile(r"\((?:\?P<(?P<name>\w+)>)?(?P<body>(?:[^()\\?]|\\.)(?:[^()\\]|\\.)*)\)")
_INT_GROUP_RE = re.compile(r"(?:\[0-9\]|\\d)(?:\+|\{\d*,?\d*\})")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Constraints every handler enforces, stated on every string the document describes (so the
# schema is never looser than the validation): no string of a body holds NUL (`parse_body`:
# PostgreSQL text cannot), no query value holds a control character (`read_query`).
NO_NUL_PATTERN = "^[^\\u0000]*$"
NO_CONTROL_PATTERN = "^[^\\u0000-\\u001f\\u007f]*$"
# `msgspec.Meta(extra_json_schema={STORE_CURRENCY: True})` marks a currency field; the document
# of a running gateway lists its configured store currency there (`enum`).
STORE_CURRENCY = "x-store-currency"

DESCRIPTION = """\
Storefront REST API (v1). Base path `/api/v1`; a trailing slash is accepted on every route.

**Money** is an integer in the currency's minor unit (`1999` = 19.99 USD) next to an ISO 4217
`currency`; never a float. **Rounding is half-even (banker's rounding), per line**: a percent
discount is rounded on each line, a fixed discount is spread over the lines in proportion with
the remainder going to the largest line, and tax (`TAX_RATE_BPS` basis points) is rounded
half-even once per cart on the discounted subtotal.

**Lists** take `limit` (1..100, default 20) and an opaque `cursor`, and answer
`{"items": [...], "next_cursor": "..." | null}`; there is no total count.

**Errors** are `application/problem+json`. 400 malformed JSON or query, 401 missing or invalid
token, 403 not allowed, 404 unknown or not yours, 409 conflict (stock, state), 413 body too
large, 415 wrong content type, 422 validation (unknown and read-only fields included), 429 rate
limited (with `Retry-After`), 503 a dependency is down.

**Timestamps** are RFC 3339 UTC strings; **ids** are integers.
"""

PROBLEM_TYPE = "application/problem+json"
_STATUS_TEXT = {
    400: "Malformed request: JSON body, query parameter or HTTP framing",
    401: "Missing or invalid access token (`WWW-Authenticate: Bearer`)",
    402: "The card was declined; `errors[0].payment_id` is the failed attempt",
    403: "Authenticated, but not allowed",
    404: "Unknown, or not visible to the caller",
    409: "Conflict with the current state (stock, state, duplicates)",
    413: "Body too large",
    415: "Body is not application/json",
    422: "Validation failed; `errors` names the fields",
    426: "A WebSocket version other than 13 (`Sec-WebSocket-Version: 13`)",
    429: "Rate limited; see `Retry-After`",
    503: "A dependency is down; see `Retry-After`",
}


class ProblemFieldError(msgspec.Struct, omit_defaults=True):
    """One failed field. A short stock line of a checkout (409) also carries `product_id`,
    `variant_id`, `requested` and `available` (0 when the product is gone or inactive); a
    refund over what is left `refundable`; a declined payment (402) its `payment_id`."""

    field: str
    message: str
    product_id: int | msgspec.UnsetType = msgspec.UNSET
    variant_id: int | msgspec.UnsetType = msgspec.UNSET
    requested: int | msgspec.UnsetType = msgspec.UNSET
    available: int | msgspec.UnsetType = msgspec.UNSET
    refundable: int | msgspec.UnsetType = msgspec.UNSET
    payment_id: int | msgspec.UnsetType = msgspec.UNSET


class Problem(msgspec.Struct):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemFieldError] | msgspec.UnsetType = msgspec.UNSET


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter: documented in the schema and parsed by `read_query` alike."""

    name: str
    kind: type = str  # str, int or bool
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None
    max_length: int | None = None
    default: Any = None
    # Given any number of times (`?option=a&option=b`); parsed to a tuple, empty when absent.
    repeated: bool = False
    max_items: int | None = None
    # A stricter pattern than "no control characters" (it must exclude them too).
    pattern: str | None = None

    def schema(self) -> dict[str, Any]:
        if self.repeated:
            items = Param(
                self.name,
                self.kind,
                minimum=self.minimum,
                maximum=self.maximum,
                enum=self.enum,
                max_length=self.max_length,
                pattern=self.pattern,
            ).schema()
            array: dict[str, Any] = {"type": "array", "items": items}
            if self.max_items is not None:
                array["maxItems"] = self.max_items
            return array
        schema: dict[str, Any] = {
            "type": {str: "string", int: "integer", bool: "boolean"}[self.kind]
        }
        if self.kind is int:  # read_query holds every integer to 64 bits
            schema["minimum"] = _INT64_MIN if self.minimum is None else self.minimum
            schema["maximum"] = _INT64_MAX if self.maximum is None else self.maximum
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.kind is str and self.enum is None:
            schema["pattern"] = self.pattern or NO_CONTROL_PATTERN
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def parse(self, raw: str) -> Any:
        if self.kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise self._bad("must be true or false")
            return lowered in ("true", "1")
        if self.kind is int:
            text = raw.strip()
            if not re.fullmatch(r"-?[0-9]{1,19}", text):
                raise self._bad("must be an integer")
            value = int(text)
            low = _INT64_MIN if self.minimum is None else self.minimum
            high = _INT64_MAX if self.maximum is None else self.maximum
            if not low <= value <= high:
                raise self._bad(f"must be between {low} and {high}")
            return value
        if self.enum is not None and raw not in self.enum:
            raise self._bad("one of " + ", ".join(self.enum))
        if self.max_length is not None and len(raw) > self.max_length:
            raise self._bad(f"at most {self.max_length} characters")
        if self.pattern is not None and not re.search(self.pattern, raw):
            raise self._bad(self.description or "does not have the expected form")
        return raw

    def _bad(self, message: str) -> BadRequest:
        return BadRequest(
            f"invalid query parameter {self.name!r}", errors=[FieldError(self.name, message)]
        )


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    response: Any = None
    status: int = 200
    request: Any = None
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""
    also: dict[int, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


# C0 controls and DEL. Tornado's get_query_argument silently deletes most of them, which turned
# `?cursor=%00%01` into "no cursor" (a 200 of page one); a client sending them has a bug to hear of.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def read_query(handler: tornado.web.RequestHandler, params: Sequence[Param]) -> dict[str, Any]:
    """The declared query parameters, typed; absent ones are None (or their default).

    A value that is not UTF-8 or holds a control character is a 400 naming the parameter, never
    quietly dropped; surrounding spaces are trimmed, and an empty value counts as absent."""
    arguments = handler.request.query_arguments
    values: dict[str, Any] = {}
    for param in params:
        given = arguments.get(param.name)
        if param.repeated:
            texts = [_query_text(param, value) for value in given or ()]
            if param.max_items is not None and len(texts) > param.max_items:
                raise param._bad(f"given at most {param.max_items} times")
            values[param.name] = tuple(param.parse(text) for text in texts if text)
            continue
        raw = None if not given else _query_text(param, given[-1])
        values[param.name] = param.default if not raw else param.parse(raw)
    return values


def _query_text(param: Param, value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise param._bad("must be UTF-8 text") from None
    if _CONTROL_CHARS.search(text):
        raise param._bad("must not contain control characters")
    return text.strip(" ")


# ---- building the document -------------------------------------------------------------------


def openapi_path(pattern: str) -> tuple[str, list[tuple[str, bool]]]:
    """Tornado route regex → OpenAPI path template and its (parameter, is_integer) list.

    Named groups keep their name; an unnamed group after `/orders/` becomes `{order_id}`."""
    params: list[tuple[str, bool]] = []

    def replace(match: re.Match[str]) -> str:
        name, body = match.group("name"), match.group("body")
        if name is None:
            segment = match.string[: match.start()].rstrip("/").rsplit("/", 1)[-1]
            name = f"{segment.removesuffix('s') or 'param'}_id"
        params.append((name, _INT_GROUP_RE.fullmatch(body) is not None))
        return "{" + name + "}"

    path = _GROUP_RE.sub(replace, pattern.removeprefix("^").removesuffix("$"))
    path = path.removesuffix("/?").replace("\\.", ".")
    return path or "/", params


def _implemented(handler: type[tornado.web.RequestHandler]) -> list[str]:
    return [
        m
        for m in _METHODS
        if getattr(handler, m.lower()) is not getattr(tornado.web.RequestHandler, m.lower())
    ]


class _Builder:
    def __init__(self) -> None:
        self.types: list[Any] = [Problem]
        self.undocumented: list[str] = []

    def ref(self, type_: Any) -> Any:
        """A placeholder resolved once every type is known (schema_components needs them all)."""
        self.types.append(type_)
        return _TypeRef(len(self.types) - 1)

    def operation(
        self, path: str, method: str, handler: type[Any], params: list[tuple[str, bool]]
    ) -> dict[str, Any]:
        specs: dict[str, Operation] = getattr(handler, "api", {})
        access = getattr(handler, "access", {}).get(method, "anyone")
        tag = handler.__module__.rsplit(".", 1)[-1]
        spec = specs.get(method)
        result: dict[str, Any] = {"tags": [tag], "operationId": _operation_id(handler, method)}
        if params:
            result["parameters"] = [
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1} if is_int else {"type": "string"},
                }
                for name, is_int in params
            ]
        result["security"] = (
            [{}, {"bearerAuth": []}] if access == "anyone" else [{"bearerAuth": []}]
        )
        if spec is None:
            self.undocumented.append(f"{method} {path}")
            result.update(
                {
                    "summary": f"{handler.__name__} {method}",
                    "x-undocumented": True,
                    "responses": {"default": {"description": "not described yet"}},
                }
            )
            return result
        result["summary"] = spec.summary
        if spec.description:
            result["description"] = spec.description
        if access != "anyone":
            result["description"] = (
                result.get("description", "") + f"\n\nWho may call: **{access}**."
            ).strip()
        if spec.query:
            result.setdefault("parameters", []).extend(
                {
                    "name": p.name,
                    "in": "query",
                    "required": False,
                    "schema": p.schema(),
                    **({"description": p.description} if p.description else {}),
                }
                for p in spec.query
            )
        if spec.request is not None:
            result["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.ref(spec.request)}},
            }
        result["responses"] = self.responses(spec, access, bool(params))
        return result

    def responses(self, spec: Operation, access: str, has_path_params: bool) -> dict[str, Any]:
        success: dict[str, Any] = {"description": spec.summary}
        if spec.response is not None:
            success["content"] = {spec.content_type: {"schema": self.ref(spec.response)}}
        if spec.headers:
            success["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in spec.headers.items()
            }
        responses: dict[str, Any] = {str(spec.status): success}
        for status, text in spec.also.items():
            responses[str(status)] = {"description": text}
        for status in sorted(_error_statuses(spec, access, has_path_params)):
            responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
        return responses


@dataclass(frozen=True, slots=True)
class _TypeRef:
    index: int


def _error_statuses(spec: Operation, access: str, has_path_params: bool) -> set[int]:
    # Any request can be malformed at the HTTP level (framing, headers): 400 everywhere. A
    # bearer token that does not verify is a 401 on every route, those open to anyone too.
    statuses = {400, 401, 429, 503, *spec.errors}
    if access in ("admin", "staff", "owner"):
        statuses.add(403)
    if has_path_params:
        statuses.add(404)
    if spec.query:
        statuses.add(400)
    if spec.request is not None:
        statuses.update((400, 413, 415, 422))
    return statuses


def _operation_id(handler: type[Any], method: str) -> str:
    name = re.sub(r"Handler$", "", handler.__name__)
    return method.lower() + name


def _resolve(node: Any, schemas: list[dict[str, Any]]) -> Any:
    if isinstance(node, _TypeRef):
        return schemas[node.index]
    if isinstance(node, dict):
        return {k: _resolve(v, schemas) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, schemas) for v in node]
    return node


def _state_string_rules(node: Any, store_currency: str) -> None:
    """Add the gateway-wide string rules (NUL, store currency) to every schema in `node`."""
    if isinstance(node, dict):
        if node.pop(STORE_CURRENCY, False):
            node["enum"] = [store_currency]
        if node.get("type") == "string" and not node.keys() & {"pattern", "enum", "format"}:
            node["pattern"] = NO_NUL_PATTERN
        for value in node.values():
            _state_string_rules(value, store_currency)
    elif isinstance(node, list):
        for value in node:
            _state_string_rules(value, store_currency)


def _add_struct_rules(types: Iterable[Any], components: dict[str, Any]) -> None:
    """Cross-field rules a Struct declares in `json_schema_rules` (JSON Schema keywords such as
    `anyOf`), which msgspec cannot derive from the field annotations."""
    for type_ in types:
        rules = getattr(type_, "json_schema_rules", None)
        if isinstance(type_, type) and rules:
            components[type_.__name__].update(rules)


def build_document(
    routes: Iterable[tuple[str, type[Any]]], store_currency: str = "USD"
) -> dict[str, Any]:
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    for pattern, handler in routes:
        if issubclass(handler, tornado.web.StaticFileHandler):
            continue  # assets of the docs pages, not API
        path, params = openapi_path(pattern)
        for method in _implemented(handler):
            paths.setdefault(path, {})[method.lower()] = builder.operation(
                path, method, handler, params
            )
    schemas, components = msgspec.json.schema_components(
        builder.types, ref_template="#/components/schemas/{name}"
    )
    _add_struct_rules(builder.types, components)
    _state_string_rules(components, store_currency)
    paths = _resolve(paths, list(schemas))
    _state_string_rules(paths, store_currency)
    problem_schema = schemas[0]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": API_TITLE, "version": API_VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {
                f"Problem{status}": {
                    "description": text,
                    "content": {PROBLEM_TYPE: {"schema": problem_schema}},
                }
                for status, text in _STATUS_TEXT.items()
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from POST /api/v1/auth/login (60 minutes).",
                }
            },
        },
        "x-undocumented-operations": builder.undocumented,
    }


@functools.cache
def document_json(routes: tuple[tuple[str, type[Any]], ...], store_currency: str = "USD") -> bytes:
    """The published document of `routes` (the application hands over its own), built once per
    process and currency: routes and specs are static."""
    return orjson.dumps(build_document(routes, store_currency))
