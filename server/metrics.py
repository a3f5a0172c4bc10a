"""Prometheus metrics of one process: HTTP, gRPC, database, cache, rate limits and tasks.

The metric objects are module-level, as the Prometheus client intends: every part of the
process increments the same series, and GET /metrics renders `REGISTRY`. They live on a
registry of our own (not the client's global default) so tests and tools that import
prometheus_client never see duplicates. Each gateway process exposes its own figures; behind
nginx every replica is scraped on its own.

The hot paths (every REST request, gRPC call and SQL statement) record into `LoopHistogram`s:
plain lists updated on the event loop without locks, turned into Prometheus families only at
scrape time. A request costs about a microsecond that way, against several for the client
library's locked Counter and Histogram, which the rarer events (cache, tasks, mail) use.
"""

from __future__ import annotations

import platform
import sys
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from importlib import metadata
from itertools import accumulate
from typing import Any

import asyncpg
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# `*_created` series double the exposition for no dashboard we draw.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
REGISTRY.register(PLATFORM_COLLECTOR)
REGISTRY.register(GC_COLLECTOR)
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"

# Latency buckets from 0.5 ms (a cached read) to 10 s (a stuck dependency).
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)


class LoopHistogram(Collector):
    """A histogram (and optionally a counter of the same events) by label values, recorded
    without locks: call `observe` from the event loop's thread only. Scrapes from another
    thread (the worker's exposition server) read a consistent-enough snapshot under the GIL.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        *,
        counter: tuple[str, str] | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = tuple(buckets)
        self.counter = counter
        # labels -> [count per bucket..., count above the last bound, sum]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def collect(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        total = (
            CounterMetricFamily(self.counter[0], self.counter[1], labels=self.labelnames)
            if self.counter
            else None
        )
        edges = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for labels, series in list(self.series.items()):
            cumulative = list(accumulate(series[:-1]))
            histogram.add_metric(
                list(labels), list(zip(edges, cumulative, strict=True)), sum_value=series[-1]
            )
            if total is not None:
                total.add_metric(list(labels), cumulative[-1])
        yield histogram
        if total is not None:
            yield total

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def value(self, labels: tuple[str, ...]) -> int:
        """How many observations these labels have (for tests)."""
        series = self.series.get(labels)
        return int(sum(series[:-1])) if series else 0


BUILD_INFO = Gauge(
    "storefront_build_info",
    "Version of the running gateway (always 1).",
    ("version", "python", "implementation"),
    registry=REGISTRY,
)

HTTP = LoopHistogram(
    "http_request_duration_seconds",
    "REST request latency, by route template and status.",
    ("method", "route", "status"),
    _LATENCY_BUCKETS,
    counter=("http_requests", "REST requests answered, by route template and status."),
)
GRPC = LoopHistogram(
    "grpc_server_handling_seconds",
    "gRPC call latency, by method and status code.",
    ("grpc_service", "grpc_method", "grpc_code"),
    _LATENCY_BUCKETS,
    counter=("grpc_server_handled", "gRPC calls completed, by method and status code."),
)
DB_QUERIES = LoopHistogram(
    "db_query_duration_seconds",
    "PostgreSQL statement latency, by statement kind.",
    ("operation",),
    _LATENCY_BUCKETS,
)
for _collector in (HTTP, GRPC, DB_QUERIES):
    REGISTRY.register(_collector)
DB_QUERY_ERRORS = Counter(
    "db_query_errors_total",
    "PostgreSQL statements that failed, by statement kind.",
    ("operation",),
    registry=REGISTRY,
)

CACHE_LOOKUPS = Counter(
    "cache_lookups_total",
    "Cache reads by namespace and result: local_hit, redis_hit or miss (computed).",
    ("namespace", "result"),
    registry=REGISTRY,
)
CACHE_REDIS_ERRORS = Counter(
    "cache_redis_errors_total",
    "Redis failures the cache absorbed (it then serves from PostgreSQL), by operation.",
    ("operation",),
    registry=REGISTRY,
)
CACHE_INVALIDATIONS = Counter(
    "cache_invalidations_total", "Namespace version bumps.", ("namespace",), registry=REGISTRY
)

RATELIMIT_DECISIONS = Counter(
    "ratelimit_decisions_total",
    "Rate-limit decisions by scope (anon, user, login) and decision (allowed, limited).",
    ("scope", "decision"),
    registry=REGISTRY,
)

TASK_RUNS = Counter(
    "taskiq_task_runs_total",
    "Background task executions, by task and outcome.",
    ("task", "outcome"),
    registry=REGISTRY,
)
TASK_DURATION = Histogram(
    "taskiq_task_duration_seconds",
    "Background task run time, by task.",
    ("task",),
    buckets=_TASK_BUCKETS,
    registry=REGISTRY,
)

OUTBOX_DELIVERIES = Counter(
    "outbox_deliveries_total",
    "E-mail outbox delivery attempts, by outcome (sent, retry, dead).",
    ("outcome",),
    registry=REGISTRY,
)
PASSWORD_HASH_PENDING = Gauge(
    "password_hash_pending",
    "Argon2 hashes and verifications running or waiting for the hashing pool.",
    registry=REGISTRY,
)
PASSWORD_HASH_WAIT = Histogram(
    "password_hash_wait_seconds",
    "Time an Argon2 job waited for a hashing thread.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
PASSWORD_HASH_DURATION = Histogram(
    "password_hash_duration_seconds",
    "Time one Argon2 hash or verification took on its thread.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
PASSWORD_HASH_REJECTED = Counter(
    "password_hash_rejected_total",
    "Sign-ins and registrations refused with 503 because the hashing queue was full.",
    registry=REGISTRY,
)
VIEWS_FLUSHED = Counter(
    "product_views_flushed_total", "Product views written to product_stats.", registry=REGISTRY
)
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Outbound webhook delivery attempts, by outcome (succeeded, retry, dead, disabled).",
    ("outcome",),
    registry=REGISTRY,
)
STREAM_CONNECTIONS = Gauge(
    "stream_connections",
    "Open live-update connections (/api/v1/stream), by transport (websocket, sse).",
    ("transport",),
    registry=REGISTRY,
)
STREAM_MESSAGES = Counter(
    "stream_messages_total", "Live updates written to stream connections.", registry=REGISTRY
)
STREAM_DROPPED = Counter(
    "stream_slow_consumers_dropped_total",
    "Stream connections closed because their bounded queue overflowed.",
    registry=REGISTRY,
)
STREAM_REFUSED = Counter(
    "stream_connections_refused_total",
    "Stream connections refused because the per-process cap was reached.",
    registry=REGISTRY,
)


def _version() -> str:
    try:
        return metadata.version("storefront-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version(), sys.implementation.name).set(1)


# ---- HTTP -------------------------------------------------------------------------------------

_STATUS_TEXT = {code: str(code) for code in range(100, 600)}
# The methods the API answers; anything else a client sends (PROPFIND, MKCOL, ...) is counted as
# "other", so clients cannot add series at will.
_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    label = _METHODS.get(method, "other")
    HTTP.observe((label, route, _STATUS_TEXT.get(status) or str(status)), seconds)


# ---- gRPC -------------------------------------------------------------------------------------

_grpc_names: dict[str, tuple[str, str]] = {}


def observe_grpc(full_method: str, code: str, seconds: float) -> None:
    names = _grpc_names.get(full_method)
    if names is None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        names = _grpc_names[full_method] = (service, method)
    GRPC.observe((names[0], names[1], code), seconds)


# ---- database ---------------------------------------------------------------------------------

_OPERATIONS = frozenset(
    (
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SET",
        "RESET",
        "SAVEPOINT",
        "RELEASE",
        "LOCK",
        "CREATE",
        "ALTER",
        "DROP",
    )
)
# Statement text -> its label; the gateway runs a bounded set of statements.
_operations: dict[str, tuple[str]] = {}
_MAX_REMEMBERED_STATEMENTS = 2_000


def _operation(query: str) -> tuple[str]:
    known = _operations.get(query)
    if known is not None:
        return known
    words = query.lstrip(" \t\r\n(").split(None, 1)
    word = words[0].upper() if words else ""
    label = (word if word in _OPERATIONS else "OTHER",)
    if len(_operations) < _MAX_REMEMBERED_STATEMENTS:
        _operations[query] = label
    return label


def observe_query(record: Any) -> None:
    """asyncpg query logger: one histogram observation per statement (errors counted too).

    Runs as a loop callback after the statement (asyncpg schedules it with call_soon).
    """
    operation = _operation(record.query)
    DB_QUERIES.observe(operation, record.elapsed)
    if record.exception is not None:
        DB_QUERY_ERRORS.labels(operation[0]).inc()


class _PoolCollector(Collector):
    """Pool size and idle connections, read at scrape time from every live pool."""

    def __init__(self) -> None:
        # asyncpg pools take no weak references: closed pools are dropped at each scrape.
        self.pools: list[asyncpg.Pool] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily("db_pool_connections", "Connections the pool holds.")
        idle = GaugeMetricFamily("db_pool_idle_connections", "Pool connections not in use.")
        maximum = GaugeMetricFamily("db_pool_max_connections", "The pool's upper bound.")
        total_size = total_idle = total_max = 0
        self.pools[:] = [pool for pool in self.pools if not pool.is_closing()]
        for pool in self.pools:
            total_size += pool.get_size()
            total_idle += pool.get_idle_size()
            total_max += pool.get_max_size()
        size.add_metric([], total_size)
        idle.add_metric([], total_idle)
        maximum.add_metric([], total_max)
        yield from (size, idle, maximum)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


_pools = _PoolCollector()
REGISTRY.register(_pools)


def watch_pool(pool: asyncpg.Pool) -> None:
    """Report this pool's gauges on /metrics for as long as it lives."""
    _pools.pools[:] = [p for p in _pools.pools if not p.is_closing()]
    _pools.pools.append(pool)


# ---- exposition -------------------------------------------------------------------------------


def render() -> bytes:
    """The Prometheus text exposition of every metric of this process."""
    return generate_latest(REGISTRY)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one series (0 when absent); handy for tests and health checks."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
