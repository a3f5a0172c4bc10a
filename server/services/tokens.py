"""Access and refresh tokens: signed and verified by the Rust extension only.

Access tokens (60 min) carry `sub`, `role`, `typ="access"`, `jti`; refresh tokens (7 days) carry
`sub`, `typ="refresh"`, `jti` and `fam` (the login they belong to). `typ` is checked on every
verification, so a refresh token is never accepted where an access token is expected.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from server.config import Settings
from server.domain.errors import Unauthenticated
from server.domain.principal import ROLES, Principal
from server.native import JwtError, JwtVerifier, jwt_encode

ACCESS = "access"
REFRESH = "refresh"


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    user_id: int
    jti: uuid.UUID
    family_id: uuid.UUID
    expires_at: int


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithm = settings.jwt_algorithm
        self._signing_key = settings.signing_key
        self._verifier = JwtVerifier(
            settings.verifying_key, settings.jwt_algorithm, issuer=settings.jwt_issuer, leeway=5
        )

    def _encode(self, claims: dict[str, object]) -> str:
        return jwt_encode(claims, self._signing_key, self.algorithm)

    def issue_access(self, user_id: int, role: str, *, now: int | None = None) -> str:
        issued = int(time.time()) if now is None else now
        return self._encode(
            {
                "sub": str(user_id),
                "role": role,
                "typ": ACCESS,
                "jti": uuid.uuid4().hex,
                "iss": self.settings.jwt_issuer,
                "iat": issued,
                "exp": issued + self.settings.access_token_ttl,
            }
        )

    def issue_refresh(
        self, user_id: int, family_id: uuid.UUID, jti: uuid.UUID, *, now: int | None = None
    ) -> tuple[str, int]:
        """Returns the token and its expiry (unix seconds)."""
        issued = int(time.time()) if now is None else now
        expires = issued + self.settings.refresh_token_ttl
        token = self._encode(
            {
                "sub": str(user_id),
                "typ": REFRESH,
                "jti": str(jti),
                "fam": str(family_id),
                "iss": self.settings.jwt_issuer,
                "iat": issued,
                "exp": expires,
            }
        )
        return token, expires

    def verify_access(self, token: str) -> Principal:
        return self.verify_access_until(token)[0]

    def verify_access_until(self, token: str) -> tuple[Principal, int]:
        """The caller and when the token expires (unix seconds): what a long-lived stream
        needs to end itself on time."""
        try:
            claims = self._verifier.verify(token, typ=ACCESS)
        except JwtError as exc:
            raise Unauthenticated(f"invalid access token: {exc}") from None
        sub, role = claims.get("sub"), claims.get("role")
        if not isinstance(sub, str) or not sub.isdigit() or role not in ROLES:
            raise Unauthenticated("invalid access token: bad subject or role")
        return Principal(int(sub), role), int(claims["exp"])

    def verify_refresh(self, token: str) -> RefreshClaims:
        try:
            claims = self._verifier.verify(token, typ=REFRESH)
            sub = claims["sub"]
            return RefreshClaims(
                int(sub), uuid.UUID(claims["jti"]), uuid.UUID(claims["fam"]), int(claims["exp"])
            )
        except (JwtError, KeyError, ValueError, TypeError) as exc:
            raise Unauthenticated(f"invalid refresh token: {exc}") from None

    def authenticate_header(self, header: str) -> Principal:
        """`Authorization: Bearer <access>` → the caller; anything else is a 401."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("expected 'Authorization: Bearer <token>'")
        return self.verify_access(token.strip())
