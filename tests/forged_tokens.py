"""Authorization values an attacker might send, each of which must be refused.

Built with PyJWT (an independent implementation) against the test settings, so a bug shared by
our signer and verifier cannot hide a forgery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from server.config import Settings


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Any) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{_segment(header)}.{_segment(claims)}.{signature}"


def forged_authorizations(settings: Settings, user_id: int) -> dict[str, str]:
    """name → full `Authorization` header value; every one must be refused."""
    now = int(time.time())
    secret = settings.jwt_secret
    good: dict[str, Any] = {
        "sub": str(user_id),
        "role": "customer",
        "typ": "access",
        "jti": uuid.uuid4().hex,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + 600,
    }

    def signed(
        claims: dict[str, Any],
        key: Any = secret,
        algorithm: str = "HS256",
        headers: dict[str, Any] | None = None,
    ) -> str:
        return jwt.encode(claims, key, algorithm=algorithm, headers=headers)

    def without(*names: str) -> dict[str, Any]:
        return {k: v for k, v in good.items() if k not in names}

    valid = signed(good)
    head, payload, signature = valid.split(".")
    admin_payload = _segment({**good, "role": "admin"})
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    refresh = signed(
        {
            "sub": str(user_id),
            "typ": "refresh",
            "jti": str(uuid.uuid4()),
            "fam": str(uuid.uuid4()),
            "iss": settings.jwt_issuer,
            "iat": now,
            "exp": now + 600,
        }
    )
    # Algorithm confusion: an RS256 header over an HMAC made with the shared secret.
    confused_input = f"{_segment({'alg': 'RS256', 'typ': 'JWT'})}.{payload}"
    confused_mac = hmac.new(secret.encode(), confused_input.encode(), hashlib.sha256).digest()

    tokens = {
        "expired": signed({**good, "iat": now - 7200, "exp": now - 3600}),
        "wrong_key": signed(good, key="another-secret-0123456789-0123456789-xyz"),
        "alg_none": _unsigned({"alg": "none", "typ": "JWT"}, good),
        "alg_None_mixed_case": _unsigned({"alg": "NoNe", "typ": "JWT"}, good),
        "alg_none_with_signature": _unsigned({"alg": "none"}, good, signature),
        "refresh_as_access": refresh,
        "tampered_role": f"{head}.{admin_payload}.{signature}",
        "tampered_signature": f"{head}.{payload}.{flipped}",
        "signature_stripped": f"{head}.{payload}.",
        "wrong_issuer": signed({**good, "iss": "someone-else"}),
        "missing_issuer": signed(without("iss")),
        "missing_exp": signed(without("exp")),
        "exp_as_string": signed({**good, "exp": str(now + 600)}),
        "not_yet_valid": signed({**good, "nbf": now + 3600}),
        "issued_in_future": signed({**good, "iat": now + 3600}),
        "missing_typ": signed(without("typ")),
        "unknown_role": signed({**good, "role": "superuser"}),
        "non_numeric_sub": signed({**good, "sub": "admin"}),
        "missing_sub": signed(without("sub")),
        "with_audience": signed({**good, "aud": "somewhere"}),
        "rs256_foreign_key": signed(good, key=rsa_key, algorithm="RS256"),
        "eddsa_foreign_key": signed(good, key=ed_key, algorithm="EdDSA"),
        "alg_confusion_rs256_header": f"{confused_input}.{_b64(confused_mac)}",
        "crit_header": signed(good, headers={"crit": ["exp"]}),
        "two_segments": f"{head}.{payload}",
        "four_segments": f"{valid}.{signature}",
        "padded_base64": f"{head}==.{payload}.{signature}",
        "garbage": "this-is-not-a-token",
        "huge": "a" * 9000 + "." + "b" * 10 + "." + "c" * 10,
    }
    authorizations = {name: f"Bearer {token}" for name, token in tokens.items()}
    authorizations.update(
        {
            "empty_bearer": "Bearer ",
            "bearer_only": "Bearer",
            "wrong_scheme_basic": "Basic " + _b64(b"admin:admin"),
            "wrong_scheme_token": f"Token {valid}",
            "no_scheme": valid,
            "bearer_with_extra_part": f"Bearer {valid} extra",
        }
    )
    return authorizations
