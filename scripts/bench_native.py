#!/usr/bin/env python3
"""Benchmark the Rust extension ``server._native`` against pure Python.

One run prints:
* JWT verify, Rust vs PyJWT, for HS256, RS256 and EdDSA (ops/s and ratio);
* pricing a 50-line cart with a promotion, Rust vs the Python reference
  (tests/native/reference_pricing.py), for each promotion kind (ratio), in
  both forms: ``price_cart_rows`` (rows in, columns out: what the gateway
  calls) against the reference's ``price_rows``, and ``price_cart`` (a dict
  per line in and out) against the reference's ``price_cart``;
* the cost of one ``RateLimiter.check`` call from Python (ns).

Usage: ``python scripts/bench_native.py [--quick]``. Build first with
``maturin develop --release``. Timings are the best of several repeats of
CPU time of this process (``time.process_time``), not wall time, so that
other work on a shared machine skews them less.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jwt as pyjwt  # noqa: E402
from cryptography.hazmat.primitives import serialization as ser  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from server import _native  # noqa: E402


def load_reference(name: str) -> ModuleType:
    path = ROOT / "tests" / "native" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def per_call(fn: Callable[[], Any], min_time: float, repeat: int) -> float:
    """Best seconds per call of ``fn``."""
    timer = timeit.Timer(fn, timer=time.process_time)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=repeat, number=number)) / number


def keys() -> dict[str, tuple[Any, Any]]:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ed25519.Ed25519PrivateKey.generate()
    pkcs8 = (ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    spki = (ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return {
        "HS256": ("bench-secret-" + "x" * 32, "bench-secret-" + "x" * 32),
        "RS256": (r.private_bytes(*pkcs8).decode(), r.public_key().public_bytes(*spki).decode()),
        "EdDSA": (e.private_bytes(*pkcs8).decode(), e.public_key().public_bytes(*spki).decode()),
    }


def bench_jwt(min_time: float, repeat: int) -> None:
    print("JWT verify (RS256: 2048-bit key)")
    print(f"  {'alg':<6} {'PyJWT ops/s':>14} {'Rust ops/s':>14} {'ratio':>8}")
    now = int(time.time())
    claims = {
        "sub": "user-12345",
        "iat": now,
        "exp": now + 900,
        "typ": "access",
        "jti": "0f1e2d3c4b5a6978",
        "roles": ["customer"],
    }
    for alg, (priv, pub) in keys().items():
        token = pyjwt.encode(claims, priv, algorithm=alg)
        # PyJWT is given its parsed key object too, so neither side re-parses.
        py_key = pyjwt.get_algorithm_by_name(alg).prepare_key(pub)
        verifier = _native.JwtVerifier(pub, alg)
        assert verifier.verify(token, typ="access") == pyjwt.decode(token, py_key, algorithms=[alg])

        def theirs(token: str = token, py_key: Any = py_key, alg: str = alg) -> Any:
            return pyjwt.decode(token, py_key, algorithms=[alg])

        def ours(token: str = token, verify: Any = verifier.verify) -> Any:
            return verify(token, typ="access")

        t_py = per_call(theirs, min_time, repeat)
        t_rs = per_call(ours, min_time, repeat)
        print(f"  {alg:<6} {1 / t_py:>14,.0f} {1 / t_rs:>14,.0f} {t_py / t_rs:>7.1f}x")


def bench_pricing(min_time: float, repeat: int) -> None:
    ref = load_reference("reference_pricing")
    lines = [
        {
            "product_id": 1000 + i,
            "category_id": i % 7,
            "unit_price": 199 + 137 * i,
            "quantity": 1 + i % 4,
        }
        for i in range(50)
    ]
    promotions = {
        "percent": {"kind": "percent", "value": 15, "category_ids": [1, 3, 5]},
        "fixed": {
            "kind": "fixed",
            "value": 25_000,
            "min_subtotal": 10_000,
            "product_ids": list(range(1000, 1050, 2)),
        },
        "buy_x_get_y": {"kind": "buy_x_get_y", "buy_quantity": 2, "get_quantity": 1},
    }
    rows = [(x["product_id"], x["category_id"], x["unit_price"], x["quantity"]) for x in lines]
    print("Pricing a 50-line cart with a promotion, tax 8.25 %")
    print("  rows form: price_cart_rows vs reference price_rows (the gateway's call)")
    print("  dict form: price_cart vs reference price_cart (a dict per line in and out)")
    print(f"  {'promotion':<12} {'form':<5} {'Python µs':>10} {'Rust µs':>9} {'ratio':>8}")
    for name, promo in promotions.items():
        kwargs = {"promotion": promo, "tax_rate_bps": 825, "currency": "EUR"}
        assert _native.price_cart(lines, **kwargs) == ref.price_cart(lines, **kwargs)
        ours, theirs = _native.price_cart_rows(rows, **kwargs), ref.price_rows(rows, **kwargs)
        assert all(getattr(ours, f) == getattr(theirs, f) for f in ref.CartFigures.__slots__)
        forms = {
            "rows": (_native.price_cart_rows, ref.price_rows, rows),
            "dict": (_native.price_cart, ref.price_cart, lines),
        }
        for form, (rust_fn, py_fn, cart) in forms.items():
            t_py = per_call(lambda f=py_fn, c=cart, kw=kwargs: f(c, **kw), min_time, repeat)
            t_rs = per_call(lambda f=rust_fn, c=cart, kw=kwargs: f(c, **kw), min_time, repeat)
            print(
                f"  {name:<12} {form:<5} {t_py * 1e6:>10.1f} {t_rs * 1e6:>9.2f}"
                f" {t_py / t_rs:>7.1f}x"
            )


def bench_limiter(min_time: float, repeat: int) -> None:
    rl = _native.RateLimiter(1_000_000_000, 1.0, max_keys=1_000_000)
    for i in range(10_000):
        rl.check(f"user:{i}")
    check = rl.check
    stmt_globals = {"check": check, "noop": (lambda *a: None)}

    def ns(stmt: str) -> float:
        timer = timeit.Timer(stmt, timer=time.process_time, globals=stmt_globals)
        number = max(100_000, int(1_000_000 * min_time))
        return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9

    base = ns("noop('user:42')")
    default_clock = ns("check('user:42')")
    injected = ns("check('user:42', 1, 12345.678)")
    print("RateLimiter.check from Python (per call, 10k keys held)")
    print(f"  check('user:42')               {default_clock:>7.0f} ns")
    print(f"  check('user:42', 1, 12345.678) {injected:>7.0f} ns")
    print(f"  (a no-op Python call costs     {base:>7.0f} ns for comparison)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    min_time, repeat = (0.05, 3) if args.quick else (0.3, 5)
    print(f"python {sys.version.split()[0]}, PyJWT {pyjwt.__version__}")
    bench_jwt(min_time, repeat)
    bench_pricing(min_time, repeat)
    bench_limiter(min_time, repeat)


if __name__ == "__main__":
    main()
