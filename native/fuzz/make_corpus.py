"""Writes the JWT seed corpus (`corpus/jwt/<name>.<outcome>`) that `tests/fuzz_jwt.rs` replays.

Each token is built by hand to hit one rule of `src/jwt.rs`; the outcome in the file name is what
the rule says (the verifier of the corpus: HS256 with CORPUS_SECRET, now = 1 700 000 000, no
leeway, issuer or audience, 8 192 bytes at most). Run it after changing a case:

    python native/fuzz/make_corpus.py
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
from pathlib import Path

SECRET = b"storefront-fuzz-corpus-secret-0123456789"
NOW = 1_700_000_000
HS256 = {"alg": "HS256", "typ": "JWT"}
OUT = Path(__file__).resolve().parent / "corpus" / "jwt"


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def raw(value: object) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def signed(header: object, payload: object, secret: bytes = SECRET) -> bytes:
    signing_input = b64(raw(header)) + b"." + b64(raw(payload))
    return signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())


def unsigned(header: object, payload: object, signature: bytes = b"") -> bytes:
    return b64(raw(header)) + b"." + b64(raw(payload)) + b"." + signature


ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def noncanonical(segment: bytes) -> bytes:
    """The same bytes with an unused trailing bit set: 32 bytes are 43 characters, the last
    carrying two bits that must be zero."""
    last = ALPHABET.index(segment[-1:])
    assert last & 0b11 == 0
    return segment[:-1] + ALPHABET[last | 1 : (last | 1) + 1]


LATER = NOW + 3600
good = signed(HS256, {"sub": "42", "exp": LATER})
head, body, tag = good.split(b".")

CASES: dict[str, bytes] = {
    "valid.ok": good,
    "valid_with_nbf_iat_now.ok": signed(HS256, {"exp": LATER, "nbf": NOW, "iat": NOW}),
    "valid_big_exp.ok": signed(HS256, b'{"exp":99999999999999999999999999}'),
    "valid_unicode_claims.ok": signed(HS256, {"exp": LATER, "name": "Zoë \u2603 \U0001f600"}),
    "exp_now.expired": signed(HS256, {"exp": NOW}),
    "exp_past.expired": signed(HS256, {"exp": NOW - 1}),
    "exp_negative.expired": signed(HS256, {"exp": -1}),
    "exp_missing.missing_exp": signed(HS256, {"sub": "42"}),
    "exp_string.exp_not_integer": signed(HS256, {"exp": str(LATER)}),
    "exp_float.exp_not_integer": signed(HS256, b'{"exp":1700003600.5}'),
    "exp_exponent.exp_not_integer": signed(HS256, b'{"exp":1.7e9}'),
    "exp_null.exp_not_integer": signed(HS256, {"exp": None}),
    "exp_twice.bad_payload": signed(HS256, b'{"exp":1,"exp":1700003600}'),
    "nbf_future.not_yet_valid": signed(HS256, {"exp": LATER, "nbf": NOW + 10}),
    "nbf_string.nbf_not_integer": signed(HS256, {"exp": LATER, "nbf": "0"}),
    "iat_future.iat_in_future": signed(HS256, {"exp": LATER, "iat": NOW + 10}),
    "iat_bool.iat_not_integer": signed(HS256, {"exp": LATER, "iat": True}),
    "aud_unexpected.unexpected_audience": signed(HS256, {"exp": LATER, "aud": "shop"}),
    "payload_array.bad_payload": signed(HS256, [1, 2]),
    "payload_not_json.bad_payload": signed(HS256, b"exp=1700003600"),
    "payload_not_utf8.bad_payload": signed(HS256, b'{"exp":1700003600,"n":"\xff\xfe"}'),
    "payload_nested_deep.bad_payload": signed(HS256, b'{"exp":1700003600,"x":' + b"[" * 200_0),
    "alg_none.algorithm_none_refused": unsigned({"alg": "none"}, {"exp": LATER}, b64(b"x")),
    "alg_none_upper.algorithm_none_refused": unsigned({"alg": "NoNe"}, {"exp": LATER}, b64(b"x")),
    "alg_none_unsigned.malformed": unsigned({"alg": "none"}, {"exp": LATER}),
    "alg_rs256.algorithm_mismatch": signed({"alg": "RS256"}, {"exp": LATER}),
    "alg_lowercase.algorithm_mismatch": signed({"alg": "hs256"}, {"exp": LATER}),
    "alg_missing.missing_algorithm": signed({"typ": "JWT"}, {"exp": LATER}),
    "alg_twice.bad_header": signed(b'{"alg":"HS256","alg":"HS256"}', {"exp": LATER}),
    "crit.crit_header_unsupported": signed({**HS256, "crit": ["exp"]}, {"exp": LATER}),
    "header_not_json.bad_header": signed(b"HS256", {"exp": LATER}),
    "header_array.bad_header": signed([HS256], {"exp": LATER}),
    "wrong_secret.bad_signature": signed(HS256, {"exp": LATER}, b"another-secret-another-secret!!"),
    "signature_empty.malformed": head + b"." + body + b".",
    "signature_of_other_payload.bad_signature": head
    + b"."
    + b64(raw({"sub": "1", "exp": LATER}))
    + b"."
    + tag,
    "padded.bad_base64": head + b"=." + body + b"." + tag,
    "standard_alphabet.bad_base64": head + b"." + body + b"." + tag[:-2] + b"+/",
    "stray_character_in_header.bad_base64": head + b"!." + body + b"." + tag,
    # The signature covers the segments as sent: a changed payload fails it before decoding.
    "stray_character_in_payload.bad_signature": head + b"." + body + b"!." + tag,
    "signature_noncanonical_bits.bad_base64": head + b"." + body + b"." + noncanonical(tag),
    "two_segments.malformed": head + b"." + body,
    "four_segments.malformed": good + b".",
    "empty.malformed": b"",
    "dots_only.malformed": b"..",
    "too_large.token_too_large": signed(HS256, {"exp": LATER, "pad": "x" * 9000}),
}


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for name, token in CASES.items():
        (OUT / name).write_bytes(token)
    print(f"wrote {len(CASES)} tokens to {OUT}")


if __name__ == "__main__":
    main()
