#!/usr/bin/env python3
"""Benchmark ``server.http.fast.FastHTTPServer`` against stock tornado ``HTTPServer``.

Each server runs the same tiny ``tornado.web.Application`` (one JSON GET
handler) in its own subprocess pinned to one core; ``wrk`` is pinned to the
other core(s) and loads one server at a time, in alternating rounds, so
drift on the machine affects every kind alike. Prints requests/s per round,
the median per kind and the ratio to stock tornado.

    .venv/bin/python scripts/bench_fasthttp.py                 # 3 rounds x 5 s
    .venv/bin/python scripts/bench_fasthttp.py --rounds 5 --duration 10 -c 64

Kinds: ``stock`` (tornado HTTPServer, asyncio loop), ``stock-uvloop``,
``fast`` (FastHTTPServer, asyncio loop), ``fast-uvloop``.
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import tornado.web

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("stock", "stock-uvloop", "fast", "fast-uvloop")


def _pin(cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------
# server side (runs in the subprocess)


def _make_app() -> tornado.web.Application:

    class JSONHandler(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"status": "ok", "items": [1, 2, 3], "name": "storefront"})

    return tornado.web.Application([(r"/json", JSONHandler)])


async def _serve(kind: str, port: int) -> None:
    app = _make_app()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if kind.startswith("fast"):
        sys.path.insert(0, str(ROOT))
        from server.http.fast import FastHTTPServer

        fast = FastHTTPServer(app)
        await fast.listen(port, "127.0.0.1")
        print("READY", flush=True)
        await stop.wait()
        fast.stop()
        await fast.close_all_connections(1.0)
    else:
        from tornado.httpserver import HTTPServer

        stock = HTTPServer(app)
        stock.listen(port, "127.0.0.1")
        print("READY", flush=True)
        await stop.wait()
        stock.stop()
        await stock.close_all_connections()


def serve_main(kind: str, port: int, cpu: int | None) -> None:
    if cpu is not None:
        _pin({cpu})
    if kind.endswith("uvloop"):
        import uvloop

        uvloop.run(_serve(kind, port))
    else:
        asyncio.run(_serve(kind, port))


# ----------------------------------------------------------------------------
# driver


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0.0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, args: argparse.Namespace, cpus: set[int] | None) -> tuple[float, int]:
    cmd = [
        args.wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        url,
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: _pin(cpus)) if cpus else None,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not m or not n:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    return float(m.group(1)), int(n.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("-c", "--connections", type=int, default=50)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    ap.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_main(args.serve, args.port, args.cpu)
        return 0

    kinds = [k for k in args.kinds.split(",") if k]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        kinds = [k for k in kinds if not k.endswith("uvloop")]
    ncpu = os.cpu_count() or 1
    server_cpu = 0 if ncpu > 1 else None
    wrk_cpus = set(range(1, ncpu)) if ncpu > 1 else None

    procs: dict[str, tuple[subprocess.Popen[str], int]] = {}
    try:
        for kind in kinds:
            port = _free_port()
            cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
            if server_cpu is not None:
                cmd += ["--cpu", str(server_cpu)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError(f"{kind} server did not start")
            procs[kind] = (proc, port)
        print(
            f"cores={ncpu} server_cpu={server_cpu} wrk_cpus={sorted(wrk_cpus or [])} "
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
            f"{args.rounds} alternating rounds"
        )
        results: dict[str, list[float]] = {k: [] for k in kinds}
        cpu_per_req: dict[str, list[float]] = {k: [] for k in kinds}
        for url_kind in kinds:  # warm-up
            _wrk_warm(procs[url_kind][1], args, wrk_cpus)
        for rnd in range(args.rounds):
            order = kinds if rnd % 2 == 0 else list(reversed(kinds))
            for kind in order:
                proc, port = procs[kind]
                cpu0 = _cpu_seconds(proc.pid)
                rps, nreq = _wrk(f"http://127.0.0.1:{port}/json", args, wrk_cpus)
                us = (_cpu_seconds(proc.pid) - cpu0) * 1e6 / max(nreq, 1)
                results[kind].append(rps)
                cpu_per_req[kind].append(us)
                print(
                    f"round {rnd + 1} {kind:13s} {rps:10.0f} req/s  {us:6.1f} us CPU/req",
                    flush=True,
                )
        print()
        base = statistics.median(results["stock"]) if "stock" in results else None
        base_cpu = statistics.median(cpu_per_req["stock"]) if "stock" in results else None
        for kind in kinds:
            med = statistics.median(results[kind])
            cpu = statistics.median(cpu_per_req[kind])
            ratio = f"  x{med / base:.2f} vs stock" if base else ""
            cpu_ratio = f" (stock/this x{base_cpu / cpu:.2f})" if base_cpu and cpu else ""
            print(
                f"{kind:13s} median {med:10.0f} req/s{ratio}   "
                f"{cpu:6.1f} us server CPU/req{cpu_ratio}"
            )
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def _wrk_warm(port: int, args: argparse.Namespace, cpus: set[int] | None) -> None:
    warm = argparse.Namespace(**vars(args))
    warm.duration = 1
    _wrk(f"http://127.0.0.1:{port}/json", warm, cpus)  # result ignored
    time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
