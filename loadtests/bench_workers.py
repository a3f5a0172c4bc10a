"""`make bench` part 2: `storefront serve --workers 2` against `--workers 1` on a shop read mix.

Both on the same seeded embedded PostgreSQL and one Redis (what replicas share), unpinned (the
kernel spreads the workers and wrk over the machine's cores), in alternating rounds. The mix is
a shop's reads, cycled by every wrk connection: product pages of 200 products (Zipf-weighted, so
popular ones repeat), list pages (sorts, categories, filters, cursors, searches), categories and
`/auth/me` for 20 signed-in users. Target: 2 workers >= 1.7x the requests per second of one.

Each run also reports where the machine's CPU went (the gateway's process tree, wrk, PostgreSQL,
Redis) and the requests served per gateway CPU-second. Equal efficiency for 1 and 2 workers
means the second process scales, and the wall-clock ratio is then the number of cores it got.
On a 2-vCPU machine the two workers cannot get two cores: Redis, wrk and PostgreSQL need some.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import harness
from loadtests.harness import API, Service, WrkResult

JWT_SECRET = "bench-secret-0123456789-0123456789-abcdefgh"
TARGET = 1.7


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        print("bench-workers: needs wrk and redis-server", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="storefront-bench-workers-"))
    postgres = harness.Postgres(workdir / "data")
    try:
        with harness.services() as started:
            redis = harness.start_redis(workdir / "redis.log")
            started.append(redis)
            env = harness.gateway_env(
                postgres.start(),
                JWT_SECRET,
                redis_url=f"redis://127.0.0.1:{redis.port}/0",
                log_level="WARNING",
            )
            print(f"bench-workers: seeding {args.products} products ...", flush=True)
            harness.storefront(["seed", "--products", str(args.products)], env)
            return _bench(args, env, workdir, started, postgres)
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _mix(base_url: str, workdir: Path) -> Path:
    """The request lines of the read mix (see the module docs)."""
    rng = random.Random(11)
    page = harness.request("GET", f"{base_url}{API}/products?limit=100&sort=-created").json()
    ids = [item["id"] for item in page["items"]]
    page2 = harness.request(
        "GET", f"{base_url}{API}/products?limit=100&sort=-created&cursor={page['next_cursor']}"
    ).json()
    ids += [item["id"] for item in page2["items"]]
    categories = harness.request("GET", f"{base_url}{API}/categories").json()["items"]
    tokens = [
        harness.register_user(base_url, f"w{n}-{os.getpid()}@example.com", "bench-password-123")
        for n in range(20)
    ]
    lines: list[tuple[str, str]] = []
    weights = [1.0 / r for r in range(1, len(ids) + 1)]
    for product_id in rng.choices(ids, weights=weights, k=600):
        lines.append((f"{API}/products/{product_id}", "-"))
    lists = [f"{API}/products?sort={s}" for s in ("price", "-price", "name", "-created")]
    lists += [f"{API}/products?category={c['slug']}&sort=price" for c in categories]
    lists += [f"{API}/products?q={w}" for w in ("backpack", "lamp", "wireless", "oak")]
    lists += [f"{API}/products?min_price=1000&max_price=5000&in_stock=true"]
    for path in rng.choices(lists, k=250):
        lines.append((path, "-"))
    lines += [(f"{API}/categories", "-")] * 50
    lines += [(f"{API}/auth/me", f"Bearer {rng.choice(tokens)}") for _ in range(100)]
    rng.shuffle(lines)
    path = workdir / "mix.tsv"
    path.write_text("".join(f"{p}\t{a}\n" for p, a in lines))
    return path


def _cpu(gateway: Service, postgres: harness.Postgres, redis: Service) -> dict[str, float]:
    """CPU seconds so far: the gateway's process tree, wrk (our finished children), PostgreSQL
    and Redis."""
    return {
        "gateways": harness.tree_cpu_seconds(gateway.process.pid),
        "wrk": _children_cpu_seconds(),
        "postgres": postgres.cpu_seconds(),
        "redis": harness.cpu_seconds(redis.process.pid),
    }


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _bench(
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    started: list[Service],
    postgres: harness.Postgres,
) -> int:
    gateways = {
        n: harness.start_gateway(
            env, http_impl="fast", workers=n, log_path=workdir / f"gateway-{n}.log"
        )
        for n in (1, 2)
    }
    started.extend(gateways.values())
    mix = _mix(gateways[1].base_url, workdir)
    print(
        f"bench-workers: {args.rounds} rounds x {args.duration:g}s per cell, "
        f"{args.connections} connections, wrk 2 threads, unpinned, {os.cpu_count()} CPUs",
        flush=True,
    )
    results: dict[int, list[WrkResult]] = {1: [], 2: []}
    cores: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    redis = next(s for s in started if s.name == "redis")
    for service in gateways.values():  # warm-up: caches, pools, code paths
        harness.run_wrk(service.base_url + "/", seconds=2, connections=16, threads=2, mix=mix)
    for round_no in range(args.rounds):
        order = (1, 2) if round_no % 2 == 0 else (2, 1)
        for n in order:
            before = _cpu(gateways[n], postgres, redis)
            result = harness.run_wrk(
                gateways[n].base_url + "/",
                seconds=args.duration,
                connections=args.connections,
                threads=2,
                mix=mix,
            )
            used = {k: v - before[k] for k, v in _cpu(gateways[n], postgres, redis).items()}
            results[n].append(result)
            cores[n].append({k: v / result.seconds for k, v in used.items()})
            cores[n][-1]["per_gateway_cpu_s"] = (
                result.requests / used["gateways"] if used["gateways"] else 0.0
            )
            flag = (
                ""
                if result.clean
                else f"  !! {result.errors} socket errors, {result.status_errors} non-2xx"
            )
            busy = cores[n][-1]
            print(
                f"  round {round_no + 1}  workers={n}  {result.rps:>8.0f} req/s"
                f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                f"  {busy['per_gateway_cpu_s']:>6.0f} req/gateway-CPU-s  cores: gateways "
                f"{busy['gateways']:.2f}, wrk {busy['wrk']:.2f}, PostgreSQL "
                f"{busy['postgres']:.2f}, Redis {busy['redis']:.2f}{flag}",
                flush=True,
            )
    medians = {n: statistics.median(r.rps for r in rs) for n, rs in results.items()}
    ratio = medians[2] / medians[1] if medians[1] else 0.0
    met = ratio >= TARGET
    efficiency = {
        n: statistics.median(c["per_gateway_cpu_s"] for c in cs) for n, cs in cores.items()
    }
    gateway_cores = {n: statistics.median(c["gateways"] for c in cs) for n, cs in cores.items()}
    print(
        f"\nworkers=2 / workers=1 on the read mix: {ratio:.2f}x (medians {medians[2]:.0f} / "
        f"{medians[1]:.0f} req/s; target >= {TARGET:g}x)  {'MET' if met else 'MISSED'}"
    )
    # Why: what a gateway CPU-second serves, and how many cores the gateways got. Equal
    # efficiency means the second process scales; the wall-clock ratio is then the cores it got.
    print(
        f"requests per gateway CPU-second, workers=2 / workers=1: "
        f"{efficiency[2] / efficiency[1] if efficiency[1] else 0.0:.2f}x "
        f"({efficiency[2]:.0f} / {efficiency[1]:.0f}); cores the gateways used: "
        f"{gateway_cores[2]:.2f} against {gateway_cores[1]:.2f} (medians)"
    )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": {str(n): [r.rps for r in rs] for n, rs in results.items()},
        "cores": {str(n): cs for n, cs in cores.items()},
        "ratio": round(ratio, 3),
        "target": TARGET,
        "met": met,
    }
    harness.REPORTS.mkdir(parents=True, exist_ok=True)
    out = harness.REPORTS / "bench-workers-latest.json"
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"bench-workers: report written to {out.relative_to(harness.REPO)}")
    clean = all(r.clean for rs in results.values() for r in rs)
    if not clean:
        print("bench-workers: some runs had errors; the figures are not trustworthy")
    return 0 if clean and (met or not args.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
