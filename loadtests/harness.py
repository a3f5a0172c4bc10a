"""What `make bench`, `make loadtest` and their smoke test share: processes, ports, CPUs, HTTP.

Everything here talks to the real programs (`python -m server`, uvicorn, redis-server, wrk) as
separate processes, so a measurement never shares an interpreter with the harness.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

REPO = Path(__file__).resolve().parents[1]
LOADTESTS = REPO / "loadtests"
REPORTS = LOADTESTS / "reports"
PYTHON = sys.executable
API = "/api/v1"
# The load test's shoppers pick products from at most this many of the newest (a 1M catalog is
# not walked page by page before a 60 s run); popularity is Zipf over the sample, so at 1M
# products the far tail's cold reads are not modelled (docs/performance.md says so).
CATALOG_SAMPLE = 20_000
JWT_ISSUER = "storefront"
# Budgets large enough that a benchmark never meets a 429, with the limiter still consulted.
HUGE_RATE = "1000000000/hour"


_handed_out: set[int] = set()


def free_port() -> int:
    """A local port free now and not handed out before by this process: the kernel may offer
    the same ephemeral port to two binds in a row, and two servers cannot share it."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


# ---- CPUs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    """Where each side runs: the server under test on one core, the load generator on another."""

    server: int | None
    load: int | None

    @classmethod
    def pick(cls) -> Cores:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls(None, None)  # one core: pinning would only serialise the two sides
        return cls(available[0], available[1])

    def describe(self) -> str:
        if self.server is None:
            return "not pinned"
        return f"server on core {self.server}, load generator on core {self.load}"


def pinned(cpu: int | None) -> Any:
    """A `preexec_fn` that pins the child to `cpu` (None: leave it free)."""
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


# ---- processes --------------------------------------------------------------------------------


@dataclass
class Service:
    """A child process we started, its log, and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path | None = None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGINT) -> int:
        """Graceful stop (the gateway drains on SIGINT/SIGTERM), kill after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    port: int,
    *,
    log_path: Path | None,
    cpu: int | None = None,
) -> Service:
    out: IO[bytes] | int = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(cpu),
            start_new_session=True,
        )
    finally:
        if not isinstance(out, int):
            out.close()
    return Service(name, process, port, log_path)


def wait_healthy(service: Service, path: str = "/healthz", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited early:\n{service.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request("GET", service.base_url + path, timeout=1.0).status == 200:
                return
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(
        f"{service.name} did not become healthy in {timeout:.0f}s:\n{service.log_tail()}"
    )


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """Collects started services and stops them all (in reverse) however the block ends."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()


# ---- PostgreSQL, Redis and the gateway --------------------------------------------------------


class Postgres:
    """An embedded PostgreSQL in a directory of ours; children reach it through DATABASE_URL."""

    def __init__(self, data_dir: Path) -> None:
        from server.db.embedded import EmbeddedPostgres

        self._embedded = EmbeddedPostgres(data_dir)
        self.dsn = ""

    def start(self) -> str:
        self.dsn = self._embedded.start()
        return self.dsn

    def stop(self) -> None:
        self._embedded.stop()

    def cpu_seconds(self) -> float:
        """CPU time used so far by this server: the postmaster and every backend it forked."""
        pgdata = str(self._embedded.pgdata)
        postmasters: set[int] = set()
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                if "postgres" not in stat:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                if pgdata in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    postmasters.add(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # the process ended while we looked
        total = 0.0
        for pid, parent in parents.items():
            if pid in postmasters or parent in postmasters:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += cpu_seconds(pid)
        return total


def start_redis(log_path: Path | None = None) -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    service = spawn(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        os.environ,
        port,
        log_path=log_path,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return service
        time.sleep(0.05)
    service.stop()
    raise RuntimeError("redis-server did not start")


def gateway_env(
    dsn: str,
    jwt_secret: str,
    *,
    redis_url: str | None = None,
    log_level: str = "INFO",
    **overrides: str,
) -> dict[str, str]:
    """The gateway's environment for a measurement: limiter on, budgets out of reach."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOREFRONT_", "RATE_LIMIT_", "REDIS_URL", "DATABASE_URL"))
    }
    env.update(
        {
            "STOREFRONT_ENV": "development",
            "DATABASE_URL": dsn,
            "JWT_SECRET": jwt_secret,
            "RATE_LIMIT_ENABLED": "1",
            "RATE_LIMIT_ANON": HUGE_RATE,
            "RATE_LIMIT_USER": HUGE_RATE,
            "RATE_LIMIT_LOGIN": HUGE_RATE,
            "LOG_LEVEL": log_level,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(overrides)
    return env


def storefront(args: Sequence[str], env: Mapping[str, str], timeout: float = 300.0) -> str:
    """Run one `storefront` command (migrate, seed, createadmin) to completion."""
    done = subprocess.run(
        [PYTHON, "-m", "server", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"storefront {' '.join(args)} failed ({done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout


def start_gateway(
    env: Mapping[str, str],
    *,
    http_impl: str,
    log_path: Path | None,
    cpu: int | None = None,
    workers: int = 1,
    launcher: Sequence[str] = ("-m", "server"),
) -> Service:
    """`storefront serve` on free ports; `launcher` may run it under a profiler."""
    http_port, grpc_port = free_port(), free_port()
    argv = [
        PYTHON,
        *launcher,
        "serve",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--http-impl",
        http_impl,
    ]
    if workers > 1:
        argv += ["--workers", str(workers)]
    service = spawn(f"gateway[{http_impl}]", argv, env, http_port, log_path=log_path, cpu=cpu)
    service.extra["grpc_port"] = grpc_port
    wait_healthy(service)
    return service


def start_reference(
    fixtures: Path,
    *,
    log_path: Path | None,
    cpu: int | None = None,
    access_log: bool = False,
    database_url: str | None = None,
    checkout_env: Mapping[str, str] | None = None,
) -> Service:
    """The FastAPI reference: one uvicorn worker, uvloop, httptools (and PostgreSQL, given
    `database_url`, for its list route). With `checkout_env` (a gateway's environment, see
    gateway_env) it runs in that environment and serves the cart and checkout routes through
    an AppContext of its own built from it."""
    port = free_port()
    argv = [
        PYTHON,
        "-m",
        "uvicorn",
        "--factory",
        "loadtests.reference.app:create_app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]
    argv.append("--access-log" if access_log else "--no-access-log")
    env = {**(checkout_env or os.environ), "REFERENCE_FIXTURES": str(fixtures)}
    env["PYTHONPATH"] = str(REPO)
    if checkout_env is not None:
        env["REFERENCE_CHECKOUT"] = "1"
    if database_url:
        env["DATABASE_URL"] = database_url
    service = spawn("fastapi-reference", argv, env, port, log_path=log_path, cpu=cpu)
    wait_healthy(service)
    return service


# ---- HTTP -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP/1.1 request with the standard library (no client library to warm up)."""
    scheme_less = url.split("://", 1)[1]
    hostport, _, path = scheme_less.partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    all_headers = dict(headers or {})
    body = None
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        body = orjson.dumps(json_body)
        all_headers["Content-Type"] = "application/json"
    try:
        conn.request(method, "/" + path, body=body, headers=all_headers)
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def register_user(base_url: str, email: str, password: str, name: str = "Load Test") -> str:
    """A new customer through POST /auth/register; returns its access token."""
    reply = request(
        "POST",
        f"{base_url}{API}/auth/register",
        json_body={"email": email, "password": password, "name": name},
    )
    if reply.status != 201:
        raise RuntimeError(f"register answered {reply.status}: {reply.body[:300]!r}")
    token: str = reply.json()["access"]
    return token


def login(base_url: str, email: str, password: str) -> str:
    reply = request(
        "POST", f"{base_url}{API}/auth/login", json_body={"email": email, "password": password}
    )
    if reply.status != 200:
        raise RuntimeError(f"login answered {reply.status}: {reply.body[:300]!r}")
    token: str = reply.json()["access"]
    return token


def first_product_id(base_url: str) -> int:
    reply = request("GET", f"{base_url}{API}/products?limit=1&sort=created")
    if reply.status != 200 or not reply.json()["items"]:
        raise RuntimeError(f"GET /products answered {reply.status}: {reply.body[:300]!r}")
    product_id: int = reply.json()["items"][0]["id"]
    return product_id


def capture_fixtures(
    base_url: str,
    token: str,
    product_id: int,
    jwt_secret: str,
    path: Path,
    *,
    jwt_issuer: str = JWT_ISSUER,
) -> dict[str, Any]:
    """The exact JSON the gateway serves for one product and for /auth/me, for the reference."""
    product = request("GET", f"{base_url}{API}/products/{product_id}")
    me = request("GET", f"{base_url}{API}/auth/me", token=token)
    for what, reply in (("product", product), ("auth/me", me)):
        if reply.status != 200:
            raise RuntimeError(f"gateway {what} answered {reply.status}: {reply.body[:300]!r}")
    user = me.json()
    data = {
        "jwt_secret": jwt_secret,
        "jwt_issuer": jwt_issuer,
        "products": {str(product_id): product.json()},
        "users": {str(user["id"]): user},
    }
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time so far of a process and every live descendant (`serve --workers N` forks)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(current)
        todo += children.get(current, [])
    return total


# ---- wrk --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    status_errors: int
    server_cpu_s: float = 0.0  # CPU time the server process used during the run, when measured
    # Of server_cpu_s, PostgreSQL's share (when it is counted in); the load generator's own CPU
    # time (checkout_load.py only): where a database cell's time goes.
    database_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def clean(self) -> bool:
        return self.errors == 0 and self.status_errors == 0 and self.requests > 0

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of server CPU: what the server costs, whoever else is running."""
        return self.requests / self.server_cpu_s if self.server_cpu_s > 0 else 0.0


def parse_wrk(output: str) -> WrkResult:
    """The line loadtests/wrk/report.lua prints at the end of a run."""
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON ") :])
            seconds = data["duration_us"] / 1e6
            errors = sum(
                data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
            )
            return WrkResult(
                requests=data["requests"],
                seconds=seconds,
                rps=data["requests"] / seconds if seconds else 0.0,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                errors=errors,
                status_errors=data["status_errors"],
            )
    raise ValueError(f"no WRK_JSON line in wrk output:\n{output[-2000:]}")


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
    cpu: int | None = None,
    mix: Path | None = None,
    uncached: bool = False,
) -> WrkResult:
    """wrk on `url`; with `mix`, on the request lines of that file (loadtests/wrk/mix.lua); with
    `uncached`, `url` plus a random `min_price` per request (loadtests/wrk/uncached.lua)."""
    script = "mix.lua" if mix else "uncached.lua" if uncached else "report.lua"
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    # wrk takes whole seconds only.
    argv = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(LOADTESTS / "wrk" / script),
    ]
    env = {**os.environ, "WRK_REPORT": str(LOADTESTS / "wrk" / "report.lua")}
    if mix is not None:
        env["WRK_MIX"] = str(mix)
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        preexec_fn=pinned(cpu),
        timeout=seconds + 60,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]}")
    return parse_wrk(done.stdout)


# ---- the checkout load generator (loadtests/checkout_load.py) --------------------------------


def parse_checkout(output: str) -> WrkResult:
    """The line loadtests/checkout_load.py prints at the end of a run, as a WrkResult whose
    `requests` are checkout cycles (add a line + check out) and whose percentiles are those of
    the checkout request."""
    for line in output.splitlines():
        if line.startswith("CHECKOUT_JSON "):
            data = json.loads(line[len("CHECKOUT_JSON ") :])
            seconds = data["duration_us"] / 1e6
            return WrkResult(
                requests=data["cycles"],
                seconds=seconds,
                rps=data["cycles"] / seconds if seconds else 0.0,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                errors=data["errors"],
                status_errors=data["status_errors"],
                client_cpu_s=data.get("client_cpu_s", 0.0),
            )
    raise ValueError(f"no CHECKOUT_JSON line in checkout_load output:\n{output[-2000:]}")


def run_checkout(
    base_url: str, users: Path, *, seconds: float, cpu: int | None = None
) -> WrkResult:
    """loadtests/checkout_load.py against `base_url` for `seconds`, one worker per user of the
    `users` file (`[{"token", "product_id"}]`), pinned to `cpu` like wrk."""
    done = subprocess.run(
        [
            PYTHON,
            str(LOADTESTS / "checkout_load.py"),
            "--url",
            base_url,
            "--users",
            str(users),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        preexec_fn=pinned(cpu),
        timeout=seconds + 60,
        check=False,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"checkout_load failed ({done.returncode}): {done.stderr[-2000:]}")
    result = parse_checkout(done.stdout)
    if not result.clean:
        first = json.loads(done.stdout.rsplit("CHECKOUT_JSON ", 1)[1]).get("first_error")
        print(f"bench: checkout_load on {base_url}: first error: {first}", file=sys.stderr)
    return result
