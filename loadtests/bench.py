"""`make bench`: the gateway against a FastAPI reference and against itself on Tornado's connection.

One run, on pinned cores (every server on one core, wrk on the other), in alternating rounds so
that drift on a shared machine hits every target alike:

- gateway, fast connection (`storefront serve --http-impl fast`): rate limiter on with budgets out
  of reach, Prometheus metrics on, JSON access log at INFO to a file;
- FastAPI reference (loadtests/reference/app.py): one uvicorn worker, uvloop, httptools, serving
  the same JSON from memory and checking the same HS256 token with PyJWT;
- gateway, stock Tornado connection (`--http-impl tornado`), configured like the first.

Endpoints: cached `GET /api/v1/products/{id}`, authenticated `GET /api/v1/auth/me`, and the
database cell `list-db`: `GET /api/v1/products?category=category-1&sort=price` with a random
`min_price` on every request (loadtests/wrk/uncached.lua), so each one runs the list query in
PostgreSQL (the view's ids; the items come from the product cache); the reference runs the
gateway's own list function (catalog.public_product_page) through asyncpg.
The checkout cell `checkout` (gateway-fast and the reference only): wrk cannot keep users, so
loadtests/checkout_load.py (its own process, pinned to the load core like wrk) runs
`--checkout-workers` workers, each a registered user of its own on a keep-alive connection,
looping `POST /api/v1/cart/items` (one unit of a product of its own, whose stock the bench sets
to 1e9 so it never runs out) then `POST /api/v1/orders {}` with a fresh Idempotency-Key; the
reference runs the gateway's own service functions (cart.add_item, orders.checkout_cart) on an
AppContext built from the same environment. Reported: cycles/s, the checkout request's p50/p99,
cycles per CPU-second of the server plus PostgreSQL.
Targets: gateway >= 1.5x FastAPI on each, fast connection >= 2x stock connection (the stock
target is judged on the cached reads only: on the database cells both wait on the same SQL).

`--profile` afterwards runs the fast gateway under pyinstrument (cProfile when pyinstrument is
missing) while wrk drives each endpoint, and prints where the server's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import harness, profiling
from loadtests.harness import API, Cores, Service, WrkResult

JWT_SECRET = "bench-secret-0123456789-0123456789-abcdefgh"
FAST, REFERENCE, STOCK = "gateway-fast", "fastapi", "gateway-tornado"
BARE = "gateway-fast-bare"
PRODUCT, ME, LIST = "product", "me", "list-db"
CHECKOUT = "checkout"  # a cycle: add a line to the cart, check out (loadtests/checkout_load.py)
# Endpoints whose every request must reach PostgreSQL (wrk/uncached.lua varies the query).
UNCACHED = frozenset((LIST,))
# Cells whose PostgreSQL CPU counts for the reference too (it causes that work there).
DATABASE_CELLS = UNCACHED | {CHECKOUT}
CHECKOUT_TARGETS = (FAST, REFERENCE)
CHECKOUT_STOCK = 1_000_000_000
# Differ between any two orders; the rest of the order must be the same on both targets.
ORDER_VOLATILE = frozenset(("id", "created_at", "updated_at", "reserved_until"))
TARGET_VS_REFERENCE = 1.5
TARGET_VS_STOCK = 2.0

WHAT_EACH_SIDE_DOES = {
    FAST: "gateway, httptools connection: rate limiter (in-process, Rust) checked per request, "
    "Prometheus HTTP metrics, JSON access log line per request at INFO to a file, "
    "X-Request-ID + security headers; product and /auth/me: the first request (and one at "
    "least every 2 s, or after a write) through the handler (body from the cache as ready "
    "bytes), the repeats replayed from the handler's offered answer without a RequestHandler "
    "(server/http/fast/replay.py; /auth/me per user, the JWT verified in Rust on every request)",
    STOCK: "gateway, Tornado HTTP1Connection: everything the fast gateway does (replays too)",
    REFERENCE: "FastAPI 1 uvicorn worker (uvloop, httptools), no access log, no metrics, no rate "
    "limiting, no request id: product body pre-encoded in memory (+ETag, "
    "Cache-Control), /auth/me: PyJWT HS256 verify via a Depends() + user from memory; "
    "list-db: the gateway's public list function (server.services.catalog.public_product_page: "
    "the view's query, the items from an in-process product cache) on an asyncpg pool of 10, "
    "as the gateway's own pool; checkout: cart.add_item and "
    "orders.checkout_cart (Idempotency-Key honoured) on an AppContext built by "
    "build_context_with_jobs from the gateway's environment (its pool size, its in-process job "
    "runner delivering the outbox after each order), the caller taken from the PyJWT-verified "
    "token",
    BARE: "only with --bare: the fast gateway with LOG_LEVEL=WARNING (no access log line) and "
    "RATE_LIMIT_ENABLED=0; not a deployable configuration, it prices those two features",
}


@dataclass
class Cell:
    """All rounds of one (target, endpoint)."""

    rounds: list[WrkResult] = field(default_factory=list)

    def median(self, pick: Callable[[WrkResult], float]) -> float:
        return statistics.median(pick(r) for r in self.rounds) if self.rounds else 0.0

    @property
    def clean(self) -> bool:
        return all(r.clean for r in self.rounds)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("BENCH_DURATION", 5)),
        help="seconds per measured wrk run (whole seconds)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per cell")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument(
        "--checkout-workers",
        type=int,
        default=32,
        help="concurrent users of the checkout cell (0: no checkout cell)",
    )
    parser.add_argument(
        "--reference-access-log",
        action="store_true",
        help="turn uvicorn's access log on (to a file) for the reference",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile the fast gateway under load per endpoint",
    )
    parser.add_argument("--profile-only", action="store_true", help="skip the comparison")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--profiler", choices=("auto", "pyinstrument", "cProfile"), default="auto")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also measure the fast gateway without access log and rate limiter (what they cost)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    cores = Cores.pick()
    workdir = Path(tempfile.mkdtemp(prefix="storefront-bench-"))
    if cores.load is not None:
        # PostgreSQL (started below, inherits this) and the harness stay off the server's core.
        os.sched_setaffinity(0, {cores.load})
    postgres = harness.Postgres(workdir / "data")
    try:
        env = harness.gateway_env(postgres.start(), JWT_SECRET)
        print(f"bench: seeding {args.products} products ...", flush=True)
        harness.storefront(["seed", "--products", str(args.products)], env)
        return _bench(args, cores, env, workdir, postgres)
    finally:
        postgres.stop()
        if args.keep:
            print(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(
    args: argparse.Namespace,
    cores: Cores,
    env: dict[str, str],
    workdir: Path,
    postgres: harness.Postgres,
) -> int:
    with harness.services() as started:
        fast = harness.start_gateway(
            env, http_impl="fast", cpu=cores.server, log_path=workdir / "gateway-fast.log"
        )
        started.append(fast)
        email = f"bench-{os.getpid()}-{int(time.time())}@example.com"
        token = harness.register_user(fast.base_url, email, "bench-password-123")
        product_id = harness.first_product_id(fast.base_url)
        fixtures = workdir / "fixtures.json"
        harness.capture_fixtures(fast.base_url, token, product_id, JWT_SECRET, fixtures)
        paths = {
            PRODUCT: f"{API}/products/{product_id}",
            ME: f"{API}/auth/me",
            LIST: f"{API}/products?category=category-1&sort=price&limit=20",
        }
        headers: dict[str, dict[str, str]] = {
            PRODUCT: {},
            ME: {"Authorization": f"Bearer {token}"},
            LIST: {},
        }
        if args.profile_only:
            started.remove(fast)
            fast.stop()
            return _profile(args, cores, env, workdir, paths, headers)
        checkout_users = None
        if args.checkout_workers > 0:
            checkout_users = workdir / "checkout-users.json"
            _prepare_checkout(
                fast.base_url,
                env["DATABASE_URL"],
                product_id,
                args.checkout_workers,
                checkout_users,
            )

        targets: dict[str, Service] = {FAST: fast}
        targets[REFERENCE] = harness.start_reference(
            fixtures,
            cpu=cores.server,
            log_path=workdir / "reference.log",
            access_log=args.reference_access_log,
            database_url=env["DATABASE_URL"],
            checkout_env=env if checkout_users is not None else None,
        )
        started.append(targets[REFERENCE])
        targets[STOCK] = harness.start_gateway(
            env, http_impl="tornado", cpu=cores.server, log_path=workdir / "gateway-tornado.log"
        )
        started.append(targets[STOCK])
        if args.bare:
            bare_env = {**env, "LOG_LEVEL": "WARNING", "RATE_LIMIT_ENABLED": "0"}
            targets[BARE] = harness.start_gateway(
                bare_env, http_impl="fast", cpu=cores.server, log_path=workdir / "gateway-bare.log"
            )
            started.append(targets[BARE])
        _check_same_answers(targets, paths, headers)
        if checkout_users is not None:
            _check_same_checkout(targets, checkout_users)

        print(
            f"bench: {cores.describe()}; {args.rounds} rounds x {args.duration:g}s per cell, "
            f"{args.connections} connections, wrk 1 thread",
            flush=True,
        )
        load_before = os.getloadavg()
        if load_before[0] > 1.0:
            print(
                f"bench: note: load average {load_before[0]:.1f} before measuring - the machine "
                "is shared; alternation keeps the ratios fair, absolute figures drift",
                flush=True,
            )
        cells = _measure(args, cores, targets, paths, headers, postgres, checkout_users)
        report = _report(args, cores, cells, load_before)
    code = 0
    if args.strict and not report["all_targets_met"]:
        code = 1
    if any(not cell.clean for cell in cells.values()):
        print(
            "bench: some runs had socket or non-2xx errors; the figures are not trustworthy",
            file=sys.stderr,
        )
        code = 1
    if args.profile:
        _profile(args, cores, env, workdir, paths, headers)
    return code


def _check_same_answers(
    targets: dict[str, Service], paths: dict[str, str], headers: dict[str, dict[str, str]]
) -> None:
    """Apples to apples: every target answers 200 with the same JSON before we time anything."""
    for endpoint, path in paths.items():
        bodies = {}
        for name, service in targets.items():
            reply = harness.request("GET", service.base_url + path, headers=headers[endpoint])
            if reply.status != 200:
                raise RuntimeError(f"{name} {path} answered {reply.status}: {reply.body[:300]!r}")
            bodies[name] = reply.json()
        first = next(iter(bodies.values()))
        if any(body != first for body in bodies.values()):
            raise RuntimeError(f"targets disagree on {path}: {bodies}")


def _prepare_checkout(
    base_url: str, database_url: str, bench_product: int, workers: int, out: Path
) -> None:
    """One registered user and one product per checkout worker, the products' stock out of
    reach: `[{"token", "product_id"}]` into `out`."""
    print(f"bench: checkout cell: registering {workers} users ...", flush=True)
    products = asyncio.run(_checkout_products(database_url, bench_product, workers))
    if len(products) < workers:
        raise RuntimeError(f"only {len(products)} products fit the checkout cell, {workers} asked")
    stamp = f"{os.getpid()}-{int(time.time())}"
    users = [
        {
            "token": harness.register_user(
                base_url, f"bench-checkout-{stamp}-{n}@example.com", "bench-password-123"
            ),
            "product_id": product,
        }
        for n, product in enumerate(products)
    ]
    out.write_bytes(orjson.dumps(users))


async def _checkout_products(database_url: str, bench_product: int, count: int) -> list[int]:
    """Active products with one variant, outside the list cell's category and other than the
    product cell's, their stock set to CHECKOUT_STOCK (each worker has its own: no two
    checkouts wait on the same stock row)."""
    import asyncpg

    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT p.id FROM products p LEFT JOIN categories c ON c.id = p.category_id
            WHERE p.is_active AND p.id <> $1 AND coalesce(c.slug, '') <> 'category-1'
              AND (SELECT count(*) FROM product_variants v WHERE v.product_id = p.id) = 1
            ORDER BY p.id LIMIT $2
            """,
            bench_product,
            count,
        )
        ids = [row["id"] for row in rows]
        await conn.execute(
            "UPDATE product_variants SET stock = $2, is_active = true WHERE product_id = ANY($1)",
            ids,
            CHECKOUT_STOCK,
        )
        return ids
    finally:
        await conn.close()


def _normalised_order(order: Any) -> Any:
    if isinstance(order, dict):
        return {k: _normalised_order(v) for k, v in order.items() if k not in ORDER_VOLATILE}
    if isinstance(order, list):
        return [_normalised_order(v) for v in order]
    return order


def _check_same_checkout(targets: dict[str, Service], users_file: Path) -> None:
    """The checkout cell's two sides do the same: one cycle each for the same user and product
    answers 200 (the same cart) then 201 (the same order, but for its id and timestamps)."""
    user = orjson.loads(users_file.read_bytes())[0]
    carts, placed = {}, {}
    for name in CHECKOUT_TARGETS:
        base = targets[name].base_url
        add = harness.request(
            "POST",
            f"{base}{API}/cart/items",
            json_body={"product_id": user["product_id"], "quantity": 1},
            token=user["token"],
        )
        if add.status != 200:
            raise RuntimeError(f"{name} cart add answered {add.status}: {add.body[:300]!r}")
        carts[name] = add.json()
        order = harness.request(
            "POST",
            f"{base}{API}/orders",
            json_body={},
            token=user["token"],
            headers={"Idempotency-Key": f"bench-check-{name}-{time.time_ns()}"},
        )
        if order.status != 201:
            raise RuntimeError(f"{name} checkout answered {order.status}: {order.body[:300]!r}")
        body = order.json()
        if not body.get("items"):
            raise RuntimeError(f"{name} checkout answered an order without items: {body}")
        placed[name] = _normalised_order(body)
    for what, answers in (("cart add", carts), ("checkout", placed)):
        first = next(iter(answers.values()))
        if any(answer != first for answer in answers.values()):
            raise RuntimeError(f"checkout targets disagree on the {what}: {answers}")


def _with_cpu(
    result: WrkResult, before: tuple[float, float], after: tuple[float, float]
) -> WrkResult:
    return dataclasses.replace(
        result, server_cpu_s=after[0] - before[0], database_cpu_s=after[1] - before[1]
    )


def _busy(result: WrkResult) -> str:
    """How busy each core was: the server's, and the load core's (PostgreSQL + the client)."""
    seconds = result.seconds or 1.0
    server = (result.server_cpu_s - result.database_cpu_s) / seconds
    load = (result.database_cpu_s + result.client_cpu_s) / seconds
    return (
        f"  cores: server {server:4.0%}, load {load:4.0%}"
        f" (PostgreSQL {result.database_cpu_s / seconds:.0%}, client"
        f" {result.client_cpu_s / seconds:.0%})"
    )


def _measure(
    args: argparse.Namespace,
    cores: Cores,
    targets: dict[str, Service],
    paths: dict[str, str],
    headers: dict[str, dict[str, str]],
    postgres: harness.Postgres,
    checkout_users: Path | None = None,
) -> dict[tuple[str, str], Cell]:
    def cpu(name: str, endpoint: str) -> tuple[float, float]:
        # A server's cost includes the PostgreSQL work it causes (the reference causes some on
        # the database cells only): (server process + PostgreSQL, PostgreSQL).
        own = harness.cpu_seconds(targets[name].process.pid)
        database = name != REFERENCE or endpoint in DATABASE_CELLS
        db = postgres.cpu_seconds() if database else 0.0
        return own + db, db

    def run(name: str, endpoint: str, seconds: float) -> WrkResult:
        service = targets[name]
        if not service.alive():
            raise RuntimeError(f"{name} has exited:\n{service.log_tail()}")
        cpu_before = cpu(name, endpoint)
        if endpoint == CHECKOUT:
            assert checkout_users is not None
            result = harness.run_checkout(
                service.base_url, checkout_users, seconds=seconds, cpu=cores.load
            )
            return _with_cpu(result, cpu_before, cpu(name, endpoint))
        result = harness.run_wrk(
            service.base_url + paths[endpoint],
            seconds=seconds,
            connections=args.connections,
            headers=headers[endpoint],
            cpu=cores.load,
            uncached=endpoint in UNCACHED,
        )
        return _with_cpu(result, cpu_before, cpu(name, endpoint))

    order = list(targets)
    endpoints = [*paths, *([CHECKOUT] if checkout_users is not None else [])]

    def measured(endpoint: str, names: list[str]) -> list[str]:
        return [n for n in names if endpoint != CHECKOUT or n in CHECKOUT_TARGETS]

    for name in order:
        for endpoint in endpoints:
            if measured(endpoint, [name]):
                run(name, endpoint, args.warmup)
    cells = {
        (name, endpoint): Cell() for endpoint in endpoints for name in measured(endpoint, order)
    }
    for round_no in range(args.rounds):
        # Rotate who goes first so no target always meets the machine in the same state.
        rotated = order[round_no % len(order) :] + order[: round_no % len(order)]
        for endpoint in endpoints:
            for name in measured(endpoint, rotated):
                result = run(name, endpoint, args.duration)
                cells[(name, endpoint)].rounds.append(result)
                flag = (
                    ""
                    if result.clean
                    else (f"  !! {result.errors} socket errors, {result.status_errors} non-2xx")
                )
                print(
                    f"  round {round_no + 1}  {name:<16} {endpoint:<8} {result.rps:>9.0f} req/s"
                    f" {result.per_cpu_second:>9.0f} req/CPU-s"
                    f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms{flag}"
                    + (_busy(result) if endpoint == CHECKOUT else ""),
                    flush=True,
                )
    return cells


def _ratio(
    cells: dict[tuple[str, str], Cell],
    a: str,
    b: str,
    endpoint: str,
    pick: Callable[[WrkResult], float],
) -> float:
    denominator = cells[(b, endpoint)].median(pick)
    return cells[(a, endpoint)].median(pick) / denominator if denominator else 0.0


def _rps(result: WrkResult) -> float:
    return result.rps


def _per_cpu(result: WrkResult) -> float:
    return result.per_cpu_second


def _report(
    args: argparse.Namespace,
    cores: Cores,
    cells: dict[tuple[str, str], Cell],
    load_before: tuple[float, float, float],
) -> dict[str, object]:
    print()
    print(
        f"{'target':<16} {'endpoint':<8} {'req/s':>8} {'req/CPU-s':>10} {'p50 ms':>8} {'p99 ms':>8}"
        "   (medians)  req/s per round"
    )
    for (name, endpoint), cell in cells.items():
        per_round = " ".join(f"{r.rps:.0f}" for r in cell.rounds)
        print(
            f"{name:<16} {endpoint:<8} {cell.median(_rps):>8.0f} {cell.median(_per_cpu):>10.0f} "
            f"{cell.median(lambda r: r.p50_ms):>8.2f} {cell.median(lambda r: r.p99_ms):>8.2f}"
            f"               {per_round}"
        )
    if (FAST, CHECKOUT) in cells:
        print(
            f"({CHECKOUT}: req/s = cycles/s, a cycle = POST /cart/items + POST /orders; p50/p99 of"
            " the checkout request; CPU-s = server + PostgreSQL on both sides)"
        )
    print()
    print(
        "ratios: req/s (wall clock), and requests per CPU-second of the server process plus, for"
        " the gateways, PostgreSQL (robust to other load on the machine)"
    )
    ratios: list[dict[str, object]] = []
    for endpoint in (PRODUCT, ME, LIST, CHECKOUT):
        if (FAST, endpoint) not in cells:
            continue
        comparisons = [(REFERENCE, TARGET_VS_REFERENCE), (STOCK, TARGET_VS_STOCK)]
        if endpoint in DATABASE_CELLS:  # both connections wait on the same SQL: not compared
            comparisons = comparisons[:1]
        for other, target in comparisons:
            value = _ratio(cells, FAST, other, endpoint, _rps)
            per_cpu = _ratio(cells, FAST, other, endpoint, _per_cpu)
            met = value >= target
            ratios.append(
                {
                    "endpoint": endpoint,
                    "versus": other,
                    "ratio": round(value, 3),
                    "ratio_per_cpu": round(per_cpu, 3),
                    "target": target,
                    "met": met,
                    "met_per_cpu": per_cpu >= target,
                }
            )
            print(
                f"gateway-fast / {other:<16} {endpoint:<8} {value:5.2f}x  per CPU {per_cpu:5.2f}x"
                f"   (target >= {target:g}x)  {'MET' if met else 'MISSED'}"
                f" / per CPU {'MET' if per_cpu >= target else 'MISSED'}"
            )
        if (BARE, endpoint) in cells:
            for a, b in ((BARE, REFERENCE), (BARE, FAST)):
                value = _ratio(cells, a, b, endpoint, _rps)
                per_cpu = _ratio(cells, a, b, endpoint, _per_cpu)
                print(f"{a} / {b:<16} {endpoint:<8} {value:5.2f}x  per CPU {per_cpu:5.2f}x  (info)")
    print()
    print("what each side does:")
    for name, text in WHAT_EACH_SIDE_DOES.items():
        print(f"  {name}: {text}")
    if args.reference_access_log:
        print("  (reference access log ON for this run)")
    report: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "pinning": cores.describe(),
            "python": sys.version.split()[0],
        },
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": 1,
            "checkout_workers": args.checkout_workers,
            "reference_access_log": args.reference_access_log,
        },
        "cells": [
            {
                "target": name,
                "endpoint": endpoint,
                "unit": "checkout cycles" if endpoint == CHECKOUT else "requests",
                "rps_median": round(cell.median(_rps), 1),
                "per_cpu_second_median": round(cell.median(_per_cpu), 1),
                "p50_ms_median": round(cell.median(lambda r: r.p50_ms), 3),
                "p99_ms_median": round(cell.median(lambda r: r.p99_ms), 3),
                "clean": cell.clean,
                "rounds": [asdict(r) for r in cell.rounds],
            }
            for (name, endpoint), cell in cells.items()
        ],
        "ratios": ratios,
        "all_targets_met": all(bool(r["met"]) for r in ratios),
        "sides": WHAT_EACH_SIDE_DOES,
    }
    harness.REPORTS.mkdir(parents=True, exist_ok=True)
    out = harness.REPORTS / "bench-latest.json"
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"\nbench: report written to {out.relative_to(harness.REPO)}")
    return report


def _profile(
    args: argparse.Namespace,
    cores: Cores,
    env: dict[str, str],
    workdir: Path,
    paths: dict[str, str],
    headers: dict[str, dict[str, str]],
) -> int:
    harness.REPORTS.mkdir(parents=True, exist_ok=True)
    for endpoint, path in paths.items():
        profiler = profiling.Profiler.choose(workdir / f"profile-{endpoint}", args.profiler)
        service = harness.start_gateway(
            env,
            http_impl="fast",
            cpu=cores.server,
            log_path=workdir / f"gateway-profile-{endpoint}.log",
            launcher=profiler.launcher(),
        )
        try:
            harness.run_wrk(
                service.base_url + path,
                seconds=args.warmup,
                connections=args.connections,
                headers=headers[endpoint],
                cpu=cores.load,
                uncached=endpoint in UNCACHED,
            )
            profiler.start(service.process)
            result = harness.run_wrk(
                service.base_url + path,
                seconds=args.profile_seconds,
                connections=args.connections,
                headers=headers[endpoint],
                cpu=cores.load,
                uncached=endpoint in UNCACHED,
            )
            profiler.stop(service.process)
        finally:
            service.stop(timeout=60)
        text = profiler.summarise(
            f"GET {path} under wrk ({result.rps:.0f} req/s while profiled)", result.requests
        )
        out = harness.REPORTS / f"profile-{endpoint}-{profiler.kind}.txt"
        out.write_text(text)
        print(text)
        print(f"bench: profile written to {out.relative_to(harness.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
