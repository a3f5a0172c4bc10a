"""CORS for browser clients on the origins listed in `CORS_ORIGINS` (`*` allows any origin).

Tokens travel in the `Authorization` header, never in cookies, so credentials are not allowed
and a wildcard is safe to offer. Every answer says `Vary: Origin`, because whether the CORS
headers are present depends on the caller's origin.
"""

from __future__ import annotations

from server.http.base import ApiHandler

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-None-Match, X-Request-ID"
EXPOSED_HEADERS = (
    "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, X-Request-ID, ETag, "
    "Idempotent-Replayed, Location, WWW-Authenticate"
)
PREFLIGHT_MAX_AGE = "600"


class CorsPolicy:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any_origin = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    @property
    def active(self) -> bool:
        return self.any_origin or bool(self.origins)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def apply(self, handler: ApiHandler) -> bool:
        """Add the CORS headers; True when this was a preflight, now answered."""
        handler.set_sticky_header("Vary", "Origin")
        request = handler.request
        origin = request.headers.get("Origin")
        if origin is None or not self.allows(origin):
            return False
        handler.set_sticky_header("Access-Control-Allow-Origin", origin)
        is_preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        if not is_preflight:
            handler.set_sticky_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
            return False
        handler.set_sticky_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
        handler.set_sticky_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        handler.set_sticky_header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
        handler.set_status(204)
        handler.finish()
        return True
