"""`make loadtest`: the Locust suites against a real gateway, judged against loadtests/targets.toml.

Sets up its own world in a temporary directory: an embedded PostgreSQL seeded with a catalog, a
redis-server on a free port (so the cache, the rate limits and the task broker are the shared,
Redis-backed ones), an admin, a promotion code, the gateway (fast connection) and a task worker.
Every product page is read once first (a shop's cache is warm). Then Locust runs headless for a
bounded time, in two phases: the browse mix alone (anonymous REST and gRPC readers; the cache hit
rate is judged over its second half), then every user class together. CSV and HTML reports per
phase land in loadtests/reports/.

The full mix also holds live streams open (SSE, /api/v1/stream): their opening and each
message's delay from the gateway's commit to the client are Locust request events of type SSE,
judged as reads.

Besides each request name's p95 and error rate (client side), it reads /metrics before, during
and after: the cache hit rate, the PostgreSQL statement p95, server-side latency per route and
gRPC method, rate-limit refusals, and task runs and durations (from the worker's registry).
Exits 1 when any budget is missed, 2 when the run itself could not be made.

Environment: LOADTEST_DURATION (seconds in all, default 60), LOADTEST_BROWSE_DURATION (of which
the browse phase, default 2/5), LOADTEST_USERS (30), LOADTEST_SPAWN_RATE (10), LOADTEST_PRODUCTS
(1000), LOADTEST_WORKERS (gateway processes, 1), LOADTEST_PIN (1: gateway on one core, Locust,
PostgreSQL and Redis on the other; default 0).
"""

from __future__ import annotations

import csv
import http.client
import math
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests import harness
from loadtests.harness import API, CATALOG_SAMPLE, Cores, Service
from loadtests.scrape import Histogram, Scrape
from server.cache import LIST_ITEMS  # a list page's items: counted on their own

JWT_SECRET = "loadtest-secret-0123456789-0123456789-abcdef"
ADMIN_EMAIL = "admin@loadtest.example.com"
ADMIN_PASSWORD = "loadtest-admin-password"
PROMOTION = "LOADTEST10"
TARGETS = harness.LOADTESTS / "targets.toml"
CSV_PREFIX = "loadtest"
BROWSE_PHASE, MIXED_PHASE = "browse", "mixed"
BROWSE_CLASSES = ("Browser", "GrpcBrowser")


@dataclass(frozen=True)
class Settings:
    duration: int
    users: int
    spawn_rate: float
    products: int
    workers: int
    pin: bool
    browse_seconds: int

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        duration = int(env.get("LOADTEST_DURATION", "60"))
        return cls(
            duration=duration,
            users=int(env.get("LOADTEST_USERS", "30")),
            spawn_rate=float(env.get("LOADTEST_SPAWN_RATE", "10")),
            products=int(env.get("LOADTEST_PRODUCTS", "1000")),
            workers=int(env.get("LOADTEST_WORKERS", "1")),
            pin=env.get("LOADTEST_PIN", "0") == "1",
            browse_seconds=int(env.get("LOADTEST_BROWSE_DURATION", max(10, duration * 2 // 5))),
        )


@dataclass
class Verdict:
    what: str
    measured: str
    budget: str
    met: bool


def main() -> int:
    settings = Settings.from_env()
    targets = tomllib.loads(TARGETS.read_text())
    # Unpinned by default: latency budgets are about a deployment, where a gateway's Argon2
    # threads, PostgreSQL and Redis are not squeezed onto one core with the event loop.
    cores = Cores.pick() if settings.pin else Cores(None, None)
    harness.REPORTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="storefront-loadtest-"))
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})  # PostgreSQL and Redis start from here
    postgres = harness.Postgres(workdir / "data")
    try:
        with harness.services() as started:
            redis = harness.start_redis()
            started.append(redis)
            redis_url = f"redis://127.0.0.1:{redis.port}/0"
            env = harness.gateway_env(postgres.start(), JWT_SECRET, redis_url=redis_url)
            print(f"loadtest: seeding {settings.products} products ...", flush=True)
            harness.storefront(["seed", "--products", str(settings.products)], env)
            harness.storefront(
                ["createadmin", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD], env
            )
            gateway = harness.start_gateway(
                env,
                http_impl="fast",
                cpu=cores.server,
                workers=settings.workers,
                log_path=harness.REPORTS / f"{CSV_PREFIX}-gateway.log",
            )
            started.append(gateway)
            worker = _start_worker(env)
            started.append(worker)
            _create_promotion(gateway)
            print(
                f"loadtest: {settings.users} users against {gateway.base_url} "
                f"(gRPC :{gateway.extra['grpc_port']}, Redis :{redis.port}); {cores.describe()}",
                flush=True,
            )
            warmed = _warm_product_pages(gateway)
            print(
                f"loadtest: pre-warmed {warmed} product pages (a shop's cache is warm)", flush=True
            )
            before = _scrape(gateway), _scrape(worker)
            browse_seconds = settings.browse_seconds
            print(
                f"loadtest: phase 1, browse mix ({', '.join(BROWSE_CLASSES)}) for "
                f"{browse_seconds}s; the cache is judged over the second half",
                flush=True,
            )
            warm: list[Scrape] = []
            code = _run_locust(
                settings,
                gateway,
                cores,
                phase=BROWSE_PHASE,
                seconds=browse_seconds,
                classes=BROWSE_CLASSES,
                at_half=lambda: warm.append(_scrape(gateway)),
            )
            middle = _scrape(gateway)
            mixed_seconds = settings.duration - browse_seconds
            print(
                f"loadtest: phase 2, full mix (every user class) for {mixed_seconds}s", flush=True
            )
            if code == 0:
                code = _run_locust(
                    settings, gateway, cores, phase=MIXED_PHASE, seconds=mixed_seconds
                )
            after = _scrape(gateway), _scrape(worker)
        if code != 0:
            print(
                f"loadtest: locust exited with {code}; see loadtests/reports/{CSV_PREFIX}-*.log",
                file=sys.stderr,
            )
            return 2
        server = after[0].minus(before[0])
        tasks = after[1].minus(before[1]).plus(server)
        browse_warm = middle.minus(warm[0] if warm else before[0])
        verdicts = (
            _judge_requests(targets, BROWSE_PHASE)
            + _judge_requests(targets, MIXED_PHASE)
            + _judge_cache(
                targets,
                browse_cold=middle.minus(before[0]),
                browse_warm=browse_warm,
                mixed=after[0].minus(middle),
            )
            + _judge_metrics(targets, server, tasks, settings)
        )
        return _report(settings, verdicts)
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _start_worker(env: dict[str, str]) -> Service:
    port = harness.free_port()
    service = harness.spawn(
        "worker",
        [harness.PYTHON, "-m", "server", "worker"],
        {**env, "WORKER_METRICS_PORT": str(port)},
        port,
        log_path=harness.REPORTS / f"{CSV_PREFIX}-worker.log",
    )
    harness.wait_healthy(service, "/metrics")
    return service


def _create_promotion(gateway: Service) -> None:
    token = harness.login(gateway.base_url, ADMIN_EMAIL, ADMIN_PASSWORD)
    reply = harness.request(
        "POST",
        f"{gateway.base_url}{API}/promotions",
        token=token,
        json_body={"code": PROMOTION, "kind": "percent", "value": 10},
    )
    if reply.status not in (201, 409):
        raise RuntimeError(f"creating the promotion answered {reply.status}: {reply.body[:300]!r}")


def _warm_product_pages(gateway: Service) -> int:
    """Reads every active product once, as steady traffic would have: a 60-second run cannot
    otherwise tell a cold cache's first reads of the catalog's long tail from misses. On a big
    catalog, the products the shoppers pick from: the newest CATALOG_SAMPLE in stock, read the
    way locustfile.Catalog.load reads them."""
    ids: list[int] = []
    cursor = ""
    while len(ids) < CATALOG_SAMPLE:
        page = harness.request(
            "GET", f"{gateway.base_url}{API}/products?limit=100&sort=-created{cursor}"
        ).json()
        ids += [item["id"] for item in page["items"] if item.get("stock", 0) > 0]
        if not page.get("next_cursor"):
            break
        cursor = "&cursor=" + quote(page["next_cursor"])
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        for product_id in ids:
            connection.request("GET", f"{API}/products/{product_id}")
            connection.getresponse().read()
    finally:
        connection.close()
    return len(ids)


def _scrape(service: Service) -> Scrape:
    reply = harness.request("GET", service.base_url + "/metrics", timeout=30)
    if reply.status != 200:
        raise RuntimeError(f"{service.name} /metrics answered {reply.status}")
    return Scrape.parse(reply.body.decode())


def _run_locust(
    settings: Settings,
    gateway: Service,
    cores: Cores,
    *,
    phase: str,
    seconds: int,
    classes: Sequence[str] = (),
    at_half: Callable[[], None] | None = None,
) -> int:
    """One headless Locust run; `at_half` is called half-way through (a mid-run scrape)."""
    prefix = harness.REPORTS / f"{CSV_PREFIX}-{phase}"
    argv = [
        harness.PYTHON, "-m", "locust", "-f", str(harness.LOADTESTS / "locustfile.py"),
        "--headless", "--only-summary",
        "--users", str(settings.users), "--spawn-rate", str(settings.spawn_rate),
        "--run-time", f"{seconds}s", "--stop-timeout", "10",
        "--host", gateway.base_url,
        "--csv", str(prefix), "--html", f"{prefix}.html",
        "--exit-code-on-error", "0", "--loglevel", "WARNING",
        *classes,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(harness.REPO),
        "LOADTEST_ADMIN_EMAIL": ADMIN_EMAIL,
        "LOADTEST_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOADTEST_GRPC_TARGET": f"127.0.0.1:{gateway.extra['grpc_port']}",
        "LOADTEST_PROMOTION": PROMOTION,
    }
    with open(f"{prefix}-locust.log", "wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=harness.REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=harness.pinned(cores.load),
        )
        try:
            if at_half is not None:
                try:
                    process.wait(seconds / 2)
                except subprocess.TimeoutExpired:
                    at_half()
            return process.wait(seconds + 180)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# ---- budgets ----------------------------------------------------------------------------------


def _kind(name: str, request_type: str) -> str:
    if name.startswith("GET ") or request_type == "SSE":  # live streams only ever read
        return "read"
    if request_type == "grpc" and name.rpartition("/")[2].startswith(("Get", "List", "BatchGet")):
        return "read"
    return "write"


def _judge_requests(targets: dict[str, Any], phase: str) -> list[Verdict]:
    defaults = targets["defaults"]
    overrides: dict[str, dict[str, Any]] = targets.get("requests", {})
    path = harness.REPORTS / f"{CSV_PREFIX}-{phase}_stats.csv"
    verdicts: list[Verdict] = []
    seen: dict[str, int] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            name, request_type = row["Name"], row["Type"]
            if name == "Aggregated":
                continue
            count, failures = int(row["Request Count"]), int(row["Failure Count"])
            seen[name] = seen.get(name, 0) + count
            if count == 0:
                continue
            budget = overrides.get(name, {})
            kind = budget.get("kind") or _kind(name, request_type)
            p95_budget = float(budget.get("p95_ms", defaults[f"{kind}_p95_ms"]))
            error_budget = float(budget.get("max_error_rate", defaults["max_error_rate"]))
            p95 = math.nan if row["95%"] in ("N/A", "") else float(row["95%"])
            rate = failures / count
            verdicts.append(
                Verdict(
                    f"[{phase}] {name} p95 ({kind}, n={count})",
                    f"{p95:.0f} ms",
                    f"<= {p95_budget:g} ms",
                    p95 <= p95_budget,
                )
            )
            verdicts.append(
                Verdict(
                    f"[{phase}] {name} errors",
                    f"{rate:.3%} ({failures})",
                    f"< {error_budget:.1%}",
                    rate < error_budget or failures == 0,
                )
            )
    if phase == MIXED_PHASE:
        for name, budget in overrides.items():
            # A budget with `min_count` must be exercised (by the full mix): a measurement that
            # silently stopped happening (no stream event arrived) is a miss, not a pass.
            if "min_count" in budget:
                count = seen.get(name, 0)
                verdicts.append(
                    Verdict(
                        f"[{phase}] {name} samples",
                        f"{count}",
                        f">= {budget['min_count']}",
                        count >= int(budget["min_count"]),
                    )
                )
            elif name not in seen:
                print(f"loadtest: note: {name!r} has a budget but was not exercised")
    return verdicts


def _cache_rates(scrape: Scrape, title: str) -> tuple[float, float]:
    """Prints the hit rate per namespace; returns (hits, lookups) over all namespaces but the
    items of list pages."""
    print(f"  {title}")
    by_namespace: dict[str, dict[str, float]] = {}
    for labels, value in scrape.series("cache_lookups_total"):
        by_namespace.setdefault(labels.get("namespace", "?"), {})[labels.get("result", "?")] = value
    hits = lookups = 0.0
    for namespace, results in sorted(by_namespace.items()):
        n_hits = sum(v for r, v in results.items() if "hit" in r)
        n_all = sum(results.values())
        if namespace != LIST_ITEMS:
            hits, lookups = hits + n_hits, lookups + n_all
        detail = ", ".join(f"{r} {v:.0f}" for r, v in sorted(results.items()) if v)
        shown = f"{n_hits / n_all:.1%}" if n_all else "-"
        aside = "  (items of list pages, not in the total)" if namespace == LIST_ITEMS else ""
        print(f"    {namespace:<13} hit rate {shown:>6}  ({detail}){aside}")
    bumps = scrape.total("cache_invalidations_total")
    print(f"    invalidations, bumps and key retirements (cache_invalidations_total): {bumps:.0f}")
    return hits, lookups


def _list_item_rates(scrape: Scrape) -> tuple[float, float]:
    """(hits, lookups) of the product pages read as list items."""
    hits = lookups = 0.0
    for labels, value in scrape.series("cache_lookups_total"):
        if labels.get("namespace") == LIST_ITEMS:
            lookups += value
            hits += value if "hit" in labels.get("result", "") else 0.0
    return hits, lookups


def _judge_cache(
    targets: dict[str, Any], *, browse_cold: Scrape, browse_warm: Scrape, mixed: Scrape
) -> list[Verdict]:
    """Budgets for the warm browse mix and the full mix; the cold start is shown beside them."""
    print("\n-- cache (cache_lookups_total; hits = local or Redis; coalesced = waited on a fill)")
    _cache_rates(browse_cold, "browse phase, whole (after the pre-warm)")
    hits, lookups = _cache_rates(browse_warm, "browse phase, second half (judged)")
    mixed_hits, mixed_lookups = _cache_rates(
        mixed, "full-mix phase (checkouts and admin writes retire the entries they touch)"
    )
    goals = targets.get("metrics", {})
    verdicts: list[Verdict] = []
    item_hits, item_lookups = _list_item_rates(mixed)
    for label, goal, n_hits, n_lookups in (
        ("browse mix", goals.get("cache_hit_rate_min"), hits, lookups),
        ("full mix", goals.get("cache_hit_rate_mixed_min"), mixed_hits, mixed_lookups),
        (
            "list items, full mix",
            goals.get("list_items_hit_rate_mixed_min"),
            item_hits,
            item_lookups,
        ),
    ):
        if goal is None:
            continue
        rate = n_hits / n_lookups if n_lookups else 0.0
        verdicts.append(
            Verdict(
                f"cache hit rate, {label} (n={n_lookups:.0f})",
                f"{rate:.1%}",
                f">= {goal:.0%}",
                n_lookups > 0 and rate >= goal,
            )
        )
    return verdicts


def _judge_metrics(
    targets: dict[str, Any], server: Scrape, tasks: Scrape, settings: Settings
) -> list[Verdict]:
    goals = targets.get("metrics", {})
    verdicts: list[Verdict] = []
    if settings.workers > 1:
        print("loadtest: note: with several gateway processes /metrics shows one of them")

    print("\n-- PostgreSQL statements (db_query_duration_seconds)")
    for (operation,), hist in sorted(
        server.histogram("db_query_duration_seconds", ("operation",)).items()
    ):
        if hist.count:
            print(
                f"  {operation:<10} n={hist.count:>7.0f}  mean {hist.mean * 1000:6.2f} ms  "
                f"p95 {hist.quantile(0.95) * 1000:6.2f} ms"
            )
    overall = server.histogram("db_query_duration_seconds").get(())
    if "db_query_p95_ms_max" in goals:
        p95 = overall.quantile(0.95) * 1000 if overall and overall.count else math.nan
        verdicts.append(
            Verdict(
                f"database statement p95 (n={overall.count if overall else 0:.0f})",
                f"{p95:.2f} ms",
                f"<= {goals['db_query_p95_ms_max']:g} ms",
                p95 <= goals["db_query_p95_ms_max"],
            )
        )

    print("\n-- server-side latency (http_request_duration_seconds / grpc_server_handling_seconds)")
    for (method, route), hist in sorted(
        server.histogram("http_request_duration_seconds", ("method", "route")).items()
    ):
        if hist.count:
            print(f"  {method:<6} {route:<40} n={hist.count:>7.0f}  {_p50_p95(hist)}")
    for (service, method), hist in sorted(
        server.histogram("grpc_server_handling_seconds", ("grpc_service", "grpc_method")).items()
    ):
        if hist.count:
            print(f"  grpc   {service + '/' + method:<40} n={hist.count:>7.0f}  {_p50_p95(hist)}")

    limited = server.total(
        "ratelimit_decisions_total", lambda labels: labels.get("decision") == "limited"
    )
    print(f"\n-- rate limiting: {limited:.0f} requests refused over the run")

    print("\n-- background tasks (taskiq_task_duration_seconds; worker and gateway)")
    runs = {
        tuple(sorted(labels.items())): value
        for labels, value in tasks.series("taskiq_task_runs_total")
        if value
    }
    for (task,), hist in sorted(tasks.histogram("taskiq_task_duration_seconds", ("task",)).items()):
        if hist.count:
            print(
                f"  {task:<40} n={hist.count:>5.0f}  mean {hist.mean * 1000:8.1f} ms  "
                f"p95 {hist.quantile(0.95) * 1000:8.1f} ms"
            )
    if not runs:
        print("  (no task ran during the run)")
    for run_labels, value in sorted(runs.items()):
        print(f"  runs {dict(run_labels)}: {value:.0f}")
    return verdicts


def _p50_p95(hist: Histogram) -> str:
    return f"p50 {hist.quantile(0.5) * 1000:6.2f} ms  p95 {hist.quantile(0.95) * 1000:6.2f} ms"


def _report(settings: Settings, verdicts: list[Verdict]) -> int:
    print("\n-- budgets (loadtests/targets.toml)")
    width = max(len(v.what) for v in verdicts) if verdicts else 10
    for v in verdicts:
        print(f"  {'ok  ' if v.met else 'MISS'}  {v.what:<{width}}  {v.measured:>16}  {v.budget}")
    missed = [v for v in verdicts if not v.met]
    summary = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings.__dict__,
        "verdicts": [v.__dict__ for v in verdicts],
        "missed": len(missed),
    }
    out = harness.REPORTS / f"{CSV_PREFIX}-summary.json"
    out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print(
        f"\nloadtest: {len(verdicts) - len(missed)} budgets met, {len(missed)} missed; "
        f"reports in loadtests/reports/ ({CSV_PREFIX}-{{browse,mixed}}.html and _stats.csv, "
        f"{out.name})"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
