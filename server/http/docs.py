"""The published API description: /api/schema (OpenAPI 3.1), Swagger UI and ReDoc.

Both UIs are served from server/static (vendored, see its README): no CDN, and a strict
Content-Security-Policy — scripts only from this origin, no inline script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import orjson
import tornado.web
from typing_extensions import override

from server import openapi
from server.context import AppContext
from server.http.base import ApiHandler, problem, request_id_for
from server.openapi import Operation

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_URL = "/api/docs/static"
# Both UIs style elements at run time (inline styles), ReDoc renders in a blob: worker and
# Swagger UI shows data: images; nothing else is allowed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

SWAGGER_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{openapi.API_TITLE} — Swagger UI</title>
<link rel="stylesheet" href="{STATIC_URL}/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC_URL}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{STATIC_URL}/swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{openapi.API_TITLE} — ReDoc</title>
</head>
<body>
<redoc spec-url="/api/schema"></redoc>
<script src="{STATIC_URL}/redoc.standalone.js"></script>
</body>
</html>
"""


class SchemaHandler(ApiHandler):
    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation("This OpenAPI 3.1 document", response=dict[str, Any]),
    }

    async def get(self) -> None:
        self.set_header("Cache-Control", "public, max-age=300")
        routes = self.application.settings["openapi_routes"]
        self.send_json(openapi.document_json(routes, self.ctx.settings.store_currency))


class _DocsPage(ApiHandler):
    page: ClassVar[str]

    async def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.finish(self.page)


class SwaggerUIHandler(_DocsPage):
    page = SWAGGER_PAGE
    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Swagger UI over this document (served locally)", response=str, content_type="text/html"
        ),
    }


class RedocHandler(_DocsPage):
    page = REDOC_PAGE
    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    api: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "ReDoc over this document (served locally)", response=str, content_type="text/html"
        ),
    }


class DocsStaticHandler(tornado.web.StaticFileHandler):
    """The UIs' assets, with the same security headers and X-Request-ID as every other response
    (their 304s and 404s included); the access log line carries the id too."""

    access: ClassVar[dict[str, str]] = {"GET": "anyone"}
    request_id: str

    @override
    def initialize(self, ctx: AppContext) -> None:  # type: ignore[override]
        # make_app hands every handler the context; the assets only need their folder.
        super().initialize(path=str(STATIC_DIR))

    @override
    def set_default_headers(self) -> None:
        # Runs again when an error replaces the response: the first id stays.
        if not hasattr(self, "request_id"):
            self.request_id = request_id_for(self.request.headers.get("X-Request-ID"))
        for name, value in self.application.settings["security_headers"]:
            self.set_header(name, value)
        self.set_header("X-Request-ID", self.request_id)

    @override
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A missing asset, a folder or another method: problem+json like every other error,
        not Tornado's HTML page."""
        self.set_header("Content-Type", "application/problem+json")
        detail = {404: "no such asset", 405: "assets are read with GET"}.get(status_code, "")
        self.finish(orjson.dumps(problem(status_code, detail)))


routes: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    (r"/api/schema/?", SchemaHandler),
    (r"/api/docs/?", SwaggerUIHandler),
    (r"/api/redoc/?", RedocHandler),
    (STATIC_URL + r"/(.*)", DocsStaticHandler),
]
