"""JWT signing/verification in ``server._native`` (RFC 7519 + RFC 8725 rules).

* round trips and interop with PyJWT for HS256, RS256 and EdDSA, with every
  accepted key encoding;
* a corpus of >= 500 valid and forged tokens on which the Rust verifier and
  PyJWT (with ``require=["exp"]``) agree;
* hostile tokens, one test each, with the exact refusal reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server import _native
from server._native import JwtError, JwtVerifier, jwt_encode

from .conftest import HS_SECRET, KeySet

NOW = int(time.time())


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """Tokens built inside a test are relative to when it runs, not to collection time (a full
    suite reaches this module minutes after importing it)."""
    global NOW
    NOW = int(time.time())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def hs_sign(signing_input: str, key: str | bytes = HS_SECRET) -> str:
    k = key.encode() if isinstance(key, str) else key
    return b64(hmac.new(k, signing_input.encode(), hashlib.sha256).digest())


def forge(header: Any, payload: Any, key: str | bytes = HS_SECRET) -> str:
    """An HS256-signed token with an arbitrary header/payload (raw str segments
    are taken as already-encoded)."""
    h = header if isinstance(header, str) else b64json(header)
    p = payload if isinstance(payload, str) else b64json(payload)
    return f"{h}.{p}.{hs_sign(f'{h}.{p}', key)}"


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "user-1", "iat": NOW - 10, "exp": NOW + 3600, "typ": "access", **extra}


def reason(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------------------
# basics and interop
# ---------------------------------------------------------------------------


def test_error_types() -> None:
    assert issubclass(JwtError, ValueError)
    assert issubclass(_native.PricingError, ValueError)
    assert issubclass(_native.RateLimitError, ValueError)


@pytest.mark.parametrize("alg", ["HS256", "RS256", "EdDSA"])
def test_round_trip_all_key_formats(alg: str, keysets: dict[str, KeySet]) -> None:
    ks = keysets[alg]
    privates = (ks.private_pem, *ks.extra_private)
    # Verifying with a private key is accepted too (its public half is used).
    publics = (ks.public_pem, *ks.extra_public) + (privates if alg != "HS256" else ())
    for priv in privates:
        for key in (priv, priv.encode()):
            token = jwt_encode(claims(n=1), key, alg)
            for pub in publics:
                v = JwtVerifier(pub, alg)
                assert v.algorithm == alg
                assert v.verify(token, typ="access") == claims(n=1)
                assert v.verify(token.encode())["n"] == 1


@pytest.mark.parametrize("alg", ["HS256", "RS256", "EdDSA"])
def test_interop_with_pyjwt(alg: str, keysets: dict[str, KeySet]) -> None:
    ks = keysets[alg]
    ours = jwt_encode(claims(), ks.private_pem, alg, headers={"kid": "k1"})
    assert pyjwt.get_unverified_header(ours) == {"alg": alg, "kid": "k1", "typ": "JWT"}
    assert pyjwt.decode(ours, ks.public_pem, algorithms=[alg]) == claims()
    theirs = pyjwt.encode(claims(), ks.private_pem, algorithm=alg, headers={"kid": "k2"})
    assert JwtVerifier(ks.public_pem, alg).verify(theirs) == claims()


def test_encode_header_options() -> None:
    t = jwt_encode({"exp": NOW + 60}, HS_SECRET, headers={"typ": None, "kid": "a"})
    assert pyjwt.get_unverified_header(t) == {"alg": "HS256", "kid": "a"}
    t = jwt_encode({"exp": NOW + 60}, HS_SECRET, headers={"alg": "HS256", "typ": "at+jwt"})
    assert pyjwt.get_unverified_header(t) == {"alg": "HS256", "typ": "at+jwt"}
    with pytest.raises(JwtError, match="bad header parameters"):
        jwt_encode({"exp": NOW + 60}, HS_SECRET, headers={"alg": "none"})


@pytest.mark.parametrize(
    "bad",
    [
        {"x": {1, 2}},
        {"x": object()},
        {"x": b"bytes"},
        {1: "int key"},
        {"x": float("nan")},
        {"x": float("inf")},
    ],
    ids=["set", "object", "bytes", "int-key", "nan", "inf"],
)
def test_encode_rejects_non_json(bad: dict[Any, Any]) -> None:
    with pytest.raises(TypeError):
        jwt_encode(bad, HS_SECRET)


def test_encode_rejects_bad_arguments(rsa_keys: KeySet) -> None:
    with pytest.raises(TypeError):
        jwt_encode(["not", "a", "dict"], HS_SECRET)  # type: ignore[arg-type]
    with pytest.raises(JwtError, match="unsupported algorithm"):
        jwt_encode({}, HS_SECRET, "HS512")
    with pytest.raises(JwtError, match="unsupported algorithm"):
        jwt_encode({}, HS_SECRET, "none")
    with pytest.raises(JwtError, match="invalid key"):
        jwt_encode({}, "not a pem", "RS256")
    with pytest.raises(JwtError, match="invalid key"):
        jwt_encode({}, rsa_keys.public_pem, "RS256")
    with pytest.raises(JwtError, match="asymmetric key"):
        jwt_encode({}, rsa_keys.private_pem, "HS256")
    with pytest.raises(TypeError):
        jwt_encode({}, 12345, "HS256")  # type: ignore[arg-type]


def test_verifier_rejects_bad_configuration(rsa_keys: KeySet, ed_keys: KeySet) -> None:
    with pytest.raises(JwtError, match="unsupported algorithm"):
        JwtVerifier(HS_SECRET, "none")
    with pytest.raises(JwtError, match="invalid key"):
        JwtVerifier(ed_keys.public_pem, "RS256")
    with pytest.raises(JwtError, match="invalid key"):
        JwtVerifier(rsa_keys.public_pem, "EdDSA")
    with pytest.raises(JwtError, match="invalid key"):
        JwtVerifier("", "HS256")
    with pytest.raises(JwtError, match="bad configuration"):
        JwtVerifier(HS_SECRET, "HS256", max_bytes=0)
    with pytest.raises(JwtError, match="bad configuration"):
        JwtVerifier(HS_SECRET, "HS256", leeway=-1)
    with pytest.raises(JwtError, match="bad configuration"):
        JwtVerifier(HS_SECRET, "HS256", max_bytes=-5)
    with pytest.raises(TypeError):
        JwtVerifier(HS_SECRET, "HS256", audience=[1, 2])  # type: ignore[list-item]


def test_audience_list_and_leeway() -> None:
    v = JwtVerifier(HS_SECRET, "HS256", audience=["web", "api"], leeway=30)
    assert v.verify(jwt_encode(claims(aud="api"), HS_SECRET))["aud"] == "api"
    assert v.verify(jwt_encode(claims(aud=["x", "web"], exp=NOW - 10), HS_SECRET))
    with pytest.raises(JwtError, match="expired"):
        v.verify(jwt_encode(claims(aud="api", exp=NOW - 40), HS_SECRET))


def test_injected_clock() -> None:
    v = JwtVerifier(HS_SECRET, "HS256")
    token = jwt_encode({"exp": 1000, "nbf": 500}, HS_SECRET)
    assert v.verify(token, now=999) == {"exp": 1000, "nbf": 500}
    with pytest.raises(JwtError, match="expired"):
        v.verify(token, now=1000)
    with pytest.raises(JwtError, match="not yet valid"):
        v.verify(token, now=499)


def test_claims_to_python_types() -> None:
    payload = {
        "exp": NOW + 60,
        "big": 2**100,
        "neg": -(2**70),
        "u64": 2**64 - 1,
        "f": 1.25,
        "e": 1e300,
        "s": "ünïcødé ✓",
        "b": True,
        "n": None,
        "l": [1, [2, {"x": "y"}]],
        "d": {"nested": {"deep": []}},
    }
    token = jwt_encode(payload, HS_SECRET)
    got = JwtVerifier(HS_SECRET, "HS256").verify(token)
    assert got == payload
    assert type(got["big"]) is int and type(got["f"]) is float and type(got["b"]) is bool


def test_verify_releases_gil_and_is_thread_safe(rsa_keys: KeySet) -> None:
    v = JwtVerifier(rsa_keys.public_pem, "RS256")
    token = jwt_encode(claims(), rsa_keys.private_pem, "RS256")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                assert v.verify(token)["sub"] == "user-1"
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_arbitrary_claims_round_trip_both_ways(extra: dict[str, Any]) -> None:
    payload = {**extra, "exp": NOW + 600}
    payload.pop("aud", None)
    payload.pop("sub", None)  # PyJWT insists on a string sub
    payload.pop("jti", None)
    for reserved in ("nbf", "iat", "iss"):
        payload.pop(reserved, None)
    v = JwtVerifier(HS_SECRET, "HS256")
    ours = jwt_encode(payload, HS_SECRET)
    assert pyjwt.decode(ours, HS_SECRET, algorithms=["HS256"]) == payload
    assert v.verify(ours) == payload
    theirs = pyjwt.encode(payload, HS_SECRET, algorithm="HS256")
    assert v.verify(theirs) == payload


# ---------------------------------------------------------------------------
# corpus: Rust and PyJWT agree on accept/reject (and on the claims)
# ---------------------------------------------------------------------------

ISSUER = "storefront"
AUDIENCE = "storefront-api"


@dataclass
class Case:
    alg: str
    token: str
    scoped: bool  # verifier configured with issuer + audience
    label: str
    leeway: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _pyjwt_accepts(case: Case, key: str) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {"options": {"require": ["exp"]}, "leeway": case.leeway}
    if case.scoped:
        kwargs.update(issuer=ISSUER, audience=AUDIENCE)
    try:
        return pyjwt.decode(case.token, key, algorithms=[case.alg], **kwargs)
    except pyjwt.PyJWTError:
        return None


def _rust_accepts(case: Case, key: str) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {"leeway": case.leeway}
    if case.scoped:
        kwargs.update(issuer=ISSUER, audience=AUDIENCE)
    try:
        return JwtVerifier(key, case.alg, **kwargs).verify(case.token)
    except JwtError:
        return None


def _flip_sig(token: str, rng: random.Random) -> str:
    head, sig = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    return f"{head}.{b64(bytes(raw))}"


def _swap_payload(token: str, new_claims: dict[str, Any]) -> str:
    h, _, s = token.split(".")
    return f"{h}.{b64json(new_claims)}.{s}"


def build_corpus(
    keys: dict[str, KeySet], others: dict[str, KeySet], seed: int = 8725
) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    algs = ["HS256", "RS256", "EdDSA"]

    def random_claims(scoped: bool) -> dict[str, Any]:
        c: dict[str, Any] = {
            "sub": f"user-{rng.randrange(10**6)}",
            "exp": NOW + rng.randrange(120, 86400),
            "typ": rng.choice(["access", "refresh"]),
        }
        if rng.random() < 0.7:
            c["iat"] = NOW - rng.randrange(0, 3600)
        if rng.random() < 0.4:
            c["nbf"] = NOW - rng.randrange(0, 3600)
        if rng.random() < 0.5:
            c["jti"] = f"{rng.getrandbits(64):016x}"
        if rng.random() < 0.5:
            c["roles"] = rng.sample(["admin", "staff", "customer", "support"], rng.randrange(1, 4))
        if rng.random() < 0.3:
            c["ctx"] = {"n": rng.randrange(-(10**12), 10**12), "f": rng.random(), "ok": True}
        if scoped:
            c["iss"] = ISSUER
            c["aud"] = rng.choice([AUDIENCE, [AUDIENCE, "other"], ["other", AUDIENCE]])
        return c

    def sign(alg: str, c: dict[str, Any], ks: KeySet, headers: dict[str, Any] | None = None) -> str:
        return pyjwt.encode(c, ks.private_pem, algorithm=alg, headers=headers)

    for alg in algs:
        ks, other = keys[alg], others[alg]
        for _ in range(80):
            scoped = rng.random() < 0.5
            c = random_claims(scoped)
            hdr = {"kid": f"k{rng.randrange(5)}"} if rng.random() < 0.3 else None
            good = sign(alg, c, ks, hdr)
            cases.append(Case(alg, good, scoped, "valid"))
            forged = rng.choice(
                [
                    "flip-sig",
                    "swap-payload",
                    "other-key",
                    "expired",
                    "nbf-future",
                    "iat-future",
                    "missing-exp",
                    "other-alg",
                    "scope",
                    "truncated",
                    "leeway-saves",
                ]
            )
            if forged == "flip-sig":
                cases.append(Case(alg, _flip_sig(good, rng), scoped, forged))
            elif forged == "swap-payload":
                cases.append(Case(alg, _swap_payload(good, {**c, "sub": "admin"}), scoped, forged))
            elif forged == "other-key":
                cases.append(Case(alg, sign(alg, c, other), scoped, forged))
            elif forged == "expired":
                cases.append(Case(alg, sign(alg, {**c, "exp": NOW - 100}, ks), scoped, forged))
            elif forged == "nbf-future":
                cases.append(Case(alg, sign(alg, {**c, "nbf": NOW + 900}, ks), scoped, forged))
            elif forged == "iat-future":
                cases.append(Case(alg, sign(alg, {**c, "iat": NOW + 900}, ks), scoped, forged))
            elif forged == "missing-exp":
                c2 = {k: v for k, v in c.items() if k != "exp"}
                cases.append(Case(alg, sign(alg, c2, ks), scoped, forged))
            elif forged == "other-alg":
                alg2 = rng.choice([a for a in algs if a != alg])
                cases.append(Case(alg, sign(alg2, c, keys[alg2]), scoped, forged))
            elif forged == "scope":
                variant = rng.choice(["iss", "aud", "no-aud", "unscoped-with-aud"])
                if variant == "iss":
                    c2 = {**c, "iss": "evil", "aud": AUDIENCE}
                    cases.append(Case(alg, sign(alg, c2, ks), True, forged))
                elif variant == "aud":
                    c2 = {**c, "iss": ISSUER, "aud": ["evil"]}
                    cases.append(Case(alg, sign(alg, c2, ks), True, forged))
                elif variant == "no-aud":
                    c2 = {k: v for k, v in c.items() if k != "aud"} | {"iss": ISSUER}
                    cases.append(Case(alg, sign(alg, c2, ks), True, forged))
                else:
                    c2 = {**c, "aud": "someone"}
                    cases.append(Case(alg, sign(alg, c2, ks), False, forged))
            elif forged == "truncated":
                cut = rng.randrange(1, len(good) - 1)
                cases.append(Case(alg, good[:cut], scoped, forged))
            else:
                c2 = {**c, "exp": NOW - 30}
                cases.append(Case(alg, sign(alg, c2, ks), scoped, forged, leeway=120))

        # Algorithm confusion: HS256 signed with the public key as the secret.
        if alg != "HS256":
            for _ in range(10):
                c = random_claims(False)
                h = b64json({"alg": "HS256", "typ": "JWT"})
                p = b64json(c)
                tok = f"{h}.{p}.{hs_sign(f'{h}.{p}', ks.public_pem)}"
                cases.append(Case(alg, tok, False, "alg-confusion"))
        # alg none in assorted casings.
        for none in ("none", "None", "NONE", "nOnE"):
            h = b64json({"alg": none, "typ": "JWT"})
            cases.append(Case(alg, f"{h}.{b64json(random_claims(False))}.", False, "alg-none"))
            cases.append(Case(alg, f"{h}.{b64json(random_claims(False))}.e30", False, "alg-none"))
    return cases


@pytest.fixture(scope="module")
def corpus(
    hs_keys: KeySet,
    rsa_keys: KeySet,
    ed_keys: KeySet,
    rsa_keys_other: KeySet,
    ed_keys_other: KeySet,
) -> tuple[list[Case], dict[str, KeySet]]:
    keys = {"HS256": hs_keys, "RS256": rsa_keys, "EdDSA": ed_keys}
    other_hs = KeySet("HS256", HS_SECRET + "-other", HS_SECRET + "-other")
    others = {"HS256": other_hs, "RS256": rsa_keys_other, "EdDSA": ed_keys_other}
    return build_corpus(keys, others), keys


def test_corpus_agrees_with_pyjwt(corpus: tuple[list[Case], dict[str, KeySet]]) -> None:
    cases, keys = corpus
    assert len(cases) >= 500
    accepted = rejected = 0
    disagreements = []
    for case in cases:
        key = keys[case.alg].public_pem
        ours, theirs = _rust_accepts(case, key), _pyjwt_accepts(case, key)
        if ours != theirs:
            disagreements.append((case.label, case.alg, ours is not None, theirs is not None))
        if ours is None:
            rejected += 1
        else:
            accepted += 1
    assert not disagreements, disagreements[:10]
    assert accepted >= 150 and rejected >= 250, (accepted, rejected)
    for alg in ("HS256", "RS256", "EdDSA"):
        assert sum(c.alg == alg for c in cases) >= 150


# ---------------------------------------------------------------------------
# hostile tokens: one test each, with the refusal reason
# ---------------------------------------------------------------------------

GOOD = {"sub": "u", "exp": NOW + 3600, "typ": "access"}
HS = {"alg": "HS256", "typ": "JWT"}


def _good() -> str:
    return forge(HS, GOOD)


def _parts() -> list[str]:
    return _good().split(".")


@dataclass
class Hostile:
    build: Callable[[dict[str, KeySet]], str | bytes | Any]
    reason: str
    alg: str = "HS256"
    verifier: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)


def _noncanonical(header: dict[str, Any]) -> str:
    """The header's base64url with non-zero padding bits in its last char."""
    seg = b64json(header)
    assert len(seg) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(seg[-1]) | 1]
    assert last != seg[-1]
    # Python's decoder ignores those bits: the decoded header is unchanged.
    assert (
        base64.urlsafe_b64decode(seg[:-1] + last + "=" * (-len(seg) % 4))
        == json.dumps(header, separators=(",", ":")).encode()
    )
    return seg[:-1] + last


def _confusion(ks: dict[str, KeySet]) -> str:
    return forge(HS, GOOD, key=ks["RS256"].public_pem)


def _confusion_ed(ks: dict[str, KeySet]) -> str:
    return forge(HS, GOOD, key=ks["EdDSA"].public_pem)


HOSTILE: dict[str, Hostile] = {
    "alg-none-lower": Hostile(lambda ks: forge({"alg": "none"}, GOOD), "algorithm none refused"),
    "alg-none-title": Hostile(lambda ks: forge({"alg": "None"}, GOOD), "algorithm none refused"),
    "alg-none-upper": Hostile(lambda ks: forge({"alg": "NONE"}, GOOD), "algorithm none refused"),
    "alg-none-mixed": Hostile(lambda ks: forge({"alg": "nOnE"}, GOOD), "algorithm none refused"),
    "alg-none-empty-signature": Hostile(
        lambda ks: f"{b64json({'alg': 'none'})}.{b64json(GOOD)}.", "malformed"
    ),
    "alg-none-on-rs256": Hostile(
        lambda ks: forge({"alg": "none"}, GOOD), "algorithm none refused", alg="RS256"
    ),
    "alg-confusion-rs256-public-pem-as-hmac": Hostile(
        _confusion, "algorithm mismatch", alg="RS256"
    ),
    "alg-confusion-eddsa-public-pem-as-hmac": Hostile(
        _confusion_ed, "algorithm mismatch", alg="EdDSA"
    ),
    "wrong-alg-header-hs512": Hostile(
        lambda ks: forge({"alg": "HS512"}, GOOD), "algorithm mismatch"
    ),
    "wrong-alg-header-lowercase": Hostile(
        lambda ks: forge({"alg": "hs256"}, GOOD), "algorithm mismatch"
    ),
    "eddsa-token-to-hs256": Hostile(
        lambda ks: jwt_encode(GOOD, ks["EdDSA"].private_pem, "EdDSA"), "algorithm mismatch"
    ),
    "alg-missing": Hostile(lambda ks: forge({"typ": "JWT"}, GOOD), "missing algorithm"),
    "alg-not-string": Hostile(lambda ks: forge({"alg": ["HS256"]}, GOOD), "missing algorithm"),
    "exp-missing": Hostile(lambda ks: forge(HS, {"sub": "u"}), "missing exp"),
    "exp-float": Hostile(lambda ks: forge(HS, {"exp": NOW + 3600.0}), "exp not integer"),
    "exp-exponent-literal": Hostile(lambda ks: forge(HS, b64(b'{"exp":2e9}')), "exp not integer"),
    "exp-string": Hostile(lambda ks: forge(HS, {"exp": str(NOW + 3600)}), "exp not integer"),
    "exp-bool": Hostile(lambda ks: forge(HS, {"exp": True}), "exp not integer"),
    "exp-null": Hostile(lambda ks: forge(HS, {"exp": None}), "exp not integer"),
    "expired": Hostile(lambda ks: forge(HS, {"exp": NOW - 1}), "expired"),
    "nbf-future": Hostile(lambda ks: forge(HS, {**GOOD, "nbf": NOW + 600}), "not yet valid"),
    "nbf-float": Hostile(lambda ks: forge(HS, {**GOOD, "nbf": 1.5}), "nbf not integer"),
    "iat-string": Hostile(lambda ks: forge(HS, {**GOOD, "iat": "yesterday"}), "iat not integer"),
    "iat-float": Hostile(lambda ks: forge(HS, {**GOOD, "iat": NOW - 0.5}), "iat not integer"),
    "iat-future": Hostile(lambda ks: forge(HS, {**GOOD, "iat": NOW + 600}), "iat in future"),
    "crit-header": Hostile(
        lambda ks: forge({**HS, "crit": ["exp"]}, GOOD), "crit header unsupported"
    ),
    "crit-header-empty": Hostile(
        lambda ks: forge({**HS, "crit": []}, GOOD), "crit header unsupported"
    ),
    "oversized": Hostile(lambda ks: forge(HS, {**GOOD, "pad": "x" * 9000}), "token too large"),
    "oversized-custom-limit": Hostile(
        lambda ks: _good(), "token too large", verifier={"max_bytes": 64}
    ),
    "two-segments": Hostile(lambda ks: ".".join(_parts()[:2]), "malformed"),
    "four-segments": Hostile(lambda ks: _good() + ".AAAA", "malformed"),
    "one-segment": Hostile(lambda ks: _parts()[0], "malformed"),
    "bad-base64-char": Hostile(
        lambda ks: forge(HS, _parts()[1][:-2] + "*" + _parts()[1][-1:]), "bad base64"
    ),
    "bad-base64-std-alphabet": Hostile(
        lambda ks: forge(HS, b64json(GOOD).replace("-", "+").replace("_", "/") + "+/"),
        "bad base64",
    ),
    "padding-on-payload": Hostile(
        lambda ks: forge(HS, base64.urlsafe_b64encode(b'{"exp":99999999999}').decode()),
        "bad base64",
    ),
    "padding-on-signature": Hostile(lambda ks: _good() + "=", "bad base64"),
    "non-canonical-trailing-bits": Hostile(
        lambda ks: forge(_noncanonical({**HS, "kid": "a"}), GOOD), "bad base64"
    ),
    "header-not-object": Hostile(lambda ks: forge(["HS256"], GOOD), "bad header"),
    "header-string": Hostile(lambda ks: forge(b64json("HS256"), GOOD), "bad header"),
    "header-undecodable": Hostile(lambda ks: forge("HS256", GOOD), "bad base64"),
    "header-not-json": Hostile(lambda ks: forge(b64(b"{alg:HS256"), GOOD), "bad header"),
    "payload-not-json": Hostile(lambda ks: forge(HS, b64(b"exp=123")), "bad payload"),
    "payload-array": Hostile(lambda ks: forge(HS, [GOOD]), "bad payload"),
    "payload-number": Hostile(lambda ks: forge(HS, 12345), "bad payload"),
    "payload-invalid-utf8": Hostile(lambda ks: forge(HS, b64(b'{"exp":"\xff"}')), "bad payload"),
    "bad-signature": Hostile(lambda ks: forge(HS, GOOD, key="wrong-secret"), "bad signature"),
    "truncated-signature": Hostile(lambda ks: _good()[:-3], "bad signature"),
    "empty-signature": Hostile(lambda ks: _good().rsplit(".", 1)[0] + ".", "malformed"),
    "signature-swapped-from-other-token": Hostile(
        lambda ks: ".".join([*_parts()[:2], forge(HS, {"exp": 1}).split(".")[2]]),
        "bad signature",
    ),
    "wrong-iss": Hostile(
        lambda ks: forge(HS, {**GOOD, "iss": "evil", "aud": "api"}),
        "bad issuer",
        verifier={"issuer": "storefront", "audience": "api"},
    ),
    "missing-iss": Hostile(
        lambda ks: forge(HS, {**GOOD, "aud": "api"}),
        "missing issuer",
        verifier={"issuer": "storefront", "audience": "api"},
    ),
    "wrong-aud": Hostile(
        lambda ks: forge(HS, {**GOOD, "iss": "storefront", "aud": ["web", "admin"]}),
        "bad audience",
        verifier={"issuer": "storefront", "audience": "api"},
    ),
    "aud-not-string": Hostile(
        lambda ks: forge(HS, {**GOOD, "aud": 7}), "bad audience", verifier={"audience": "api"}
    ),
    "missing-aud": Hostile(
        lambda ks: forge(HS, GOOD), "missing audience", verifier={"audience": "api"}
    ),
    "unexpected-aud": Hostile(lambda ks: forge(HS, {**GOOD, "aud": "api"}), "unexpected audience"),
    "typ-mismatch-refresh-as-access": Hostile(
        lambda ks: forge(HS, {**GOOD, "typ": "refresh"}), "typ mismatch", verify={"typ": "access"}
    ),
    "typ-mismatch-type-claim": Hostile(
        lambda ks: forge(HS, {"exp": NOW + 60, "type": "refresh"}),
        "typ mismatch",
        verify={"typ": "access"},
    ),
    "typ-missing": Hostile(
        lambda ks: forge(HS, {"exp": NOW + 60}), "missing typ", verify={"typ": "access"}
    ),
    "duplicate-exp-claim": Hostile(
        lambda ks: forge(HS, b64(f'{{"exp":1,"exp":{NOW + 600}}}'.encode())), "bad payload"
    ),
    "duplicate-alg-header": Hostile(
        lambda ks: forge(b64(b'{"alg":"none","alg":"HS256"}'), GOOD), "bad header"
    ),
    "serde-number-marker-in-payload": Hostile(
        lambda ks: forge(
            HS,
            b64(f'{{"exp":{NOW + 600},"x":{{"$serde_json::private::Number":"abc"}}}}'.encode()),
        ),
        "bad payload",
    ),
    "trailing-garbage-after-payload-json": Hostile(
        lambda ks: forge(HS, b64(f'{{"exp":{NOW + 600}}} x'.encode())), "bad payload"
    ),
    "empty-token": Hostile(lambda ks: "", "malformed"),
    "dots-only": Hostile(lambda ks: "..", "malformed"),
    "non-ascii-garbage": Hostile(lambda ks: "éé.☃☃.ßß", "bad base64"),
    "non-utf8-bytes": Hostile(lambda ks: b"\xff\xfe.\x80\x81.\xc0", "bad base64"),
    "whitespace-padded": Hostile(lambda ks: f" {_good()} ", "bad base64"),
    "lone-surrogate-str": Hostile(lambda ks: "\ud800.a.b", "malformed"),
    "not-a-string": Hostile(lambda ks: 12345, "malformed"),
    "none-token": Hostile(lambda ks: None, "malformed"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_token_refused(name: str, keysets: dict[str, KeySet]) -> None:
    case = HOSTILE[name]
    token = case.build(keysets)
    verifier = JwtVerifier(keysets[case.alg].public_pem, case.alg, **case.verifier)
    with pytest.raises(JwtError) as excinfo:
        verifier.verify(token, **case.verify)
    assert reason(excinfo) == case.reason
    assert isinstance(excinfo.value, ValueError)


def test_hostile_cases_are_numerous() -> None:
    assert len(HOSTILE) >= 20


def test_hs256_verifier_refuses_public_pem_as_secret(rsa_keys: KeySet, ed_keys: KeySet) -> None:
    for pem in (rsa_keys.public_pem, ed_keys.public_pem, rsa_keys.private_pem):
        with pytest.raises(JwtError, match="asymmetric key used as HMAC secret"):
            JwtVerifier(pem, "HS256")
    with pytest.raises(JwtError, match="asymmetric key used as HMAC secret"):
        JwtVerifier("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", "HS256")


def test_escaped_alg_and_whitespace_are_fine() -> None:
    header = b64(b' { "alg" : "HS\\u0032\\u0035\\u0036" } ')
    token = forge(header, GOOD)
    assert JwtVerifier(HS_SECRET, "HS256").verify(token) == GOOD


def test_oversized_refused_before_decoding() -> None:
    v = JwtVerifier(HS_SECRET, "HS256", max_bytes=100)
    # Not even valid text: refused on size alone.
    with pytest.raises(JwtError, match="token too large"):
        v.verify("\x00" * 101)
    with pytest.raises(JwtError, match="token too large"):
        v.verify(b"." * 101)
    with pytest.raises(JwtError, match="token too large"):
        v.verify("é" * 60)  # 60 code points, 120 bytes
