"""Where a gateway process spends its time under load: pyinstrument (sampling) or cProfile.

The gateway runs under loadtests/profiled_serve.py; the harness opens the profiling window
(SIGUSR1) once warm-up is over and closes it (SIGUSR2) when the measured load ends, so imports
and start-up stay out. The samples are folded into three views: self time by area of the code
(the answer to "where does the time go"), self time by function, and cumulative time by function.
"""

from __future__ import annotations

import importlib.util
import pstats
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.harness import REPO

# (substring of the file path, area); first match wins, so specific entries come first.
_AREAS: tuple[tuple[str, str], ...] = (
    ("server/http/fast/replay.py", "response replays (server/http/fast/replay.py)"),
    ("server/http/fast/", "fast HTTP connection (server/http/fast/)"),
    ("server/http/edge.py", "rate-limit hook (server/http/edge.py)"),
    ("server/ratelimit.py", "rate limiter (server/ratelimit.py + Rust)"),
    ("server/http/", "REST handlers (server/http)"),
    ("server/observability.py", "access log line + metrics call (server/observability.py)"),
    ("server/metrics.py", "metrics (server/metrics.py)"),
    ("server/cache.py", "cache (server/cache.py)"),
    ("server/services/tokens.py", "JWT verification (tokens.py + Rust)"),
    ("server/services/", "services (server/services)"),
    ("server/db/", "repositories (server/db)"),
    ("server/", "gateway, other (server/)"),
    ("tornado/web.py", "tornado.web (RequestHandler, Application routing)"),
    ("tornado/httputil.py", "tornado.httputil (headers, request objects)"),
    ("tornado/http1connection.py", "tornado.http1connection (stock connection)"),
    ("tornado/iostream.py", "tornado.iostream (stock connection)"),
    ("tornado/httpserver.py", "tornado.httpserver"),
    ("tornado/", "tornado, other (gen, escape, concurrent, ioloop)"),
    ("prometheus_client/", "prometheus_client"),
    ("/logging/", "logging (stdlib)"),
    ("asyncpg/", "asyncpg"),
    ("/asyncio/", "asyncio (stdlib)"),
    ("uvloop/", "uvloop"),
    ("grpc/", "grpc"),
    ("/uuid.py", "uuid (request ids)"),
    ("/re/", "re (stdlib)"),
    ("/datetime.py", "datetime"),
    ("/email/", "email.utils (Date header)"),
    ("/http/", "http (stdlib)"),
    ("/contextvars", "contextvars"),
)


def area_of(path: str) -> str:
    normalised = path.replace("\\", "/")
    for needle, area in _AREAS:
        if needle in normalised:
            return area
    if "site-packages/" in normalised:
        return normalised.split("site-packages/", 1)[1].split("/", 1)[0]
    if normalised.startswith("<") or not normalised:
        return "builtins / C code called directly by the loop"
    return "python stdlib, other"


@dataclass(frozen=True)
class Sample:
    """One function's share: self seconds and cumulative seconds, and the area it counts for."""

    path: str
    line: int
    function: str
    self_s: float
    cumulative_s: float
    area: str

    @property
    def where(self) -> str:
        short = self.path.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        return f"{self.function}  ({short}:{self.line})"


def render(title: str, samples: Iterable[Sample], *, top: int = 25) -> str:
    rows = list(samples)
    total = sum(s.self_s for s in rows) or 1.0
    by_area: dict[str, float] = defaultdict(float)
    for s in rows:
        by_area[s.area] += s.self_s
    lines = [
        f"== profile: {title}",
        f"   sampled time {total:.2f}s",
        "",
        "-- self time by area (C functions count for the area of their Python caller)",
        *(
            f"  {100 * secs / total:5.1f}%  {area}"
            for area, secs in sorted(by_area.items(), key=lambda kv: -kv[1])
            if secs / total >= 0.001
        ),
        "",
        f"-- top {top} functions by self time",
    ]
    lines += [
        f"  {100 * s.self_s / total:5.1f}%  {s.where}"
        for s in sorted(rows, key=lambda s: -s.self_s)[:top]
    ]
    lines += ["", f"-- top {top} functions by cumulative time"]
    lines += [
        f"  {100 * s.cumulative_s / total:5.1f}%  {s.where}"
        for s in sorted(rows, key=lambda s: -s.cumulative_s)[:top]
    ]
    return "\n".join(lines) + "\n"


class Profiler:
    """Runs the gateway under loadtests/profiled_serve.py and profiles a window of its life."""

    def __init__(self, out: Path, kind: str) -> None:
        self.kind = kind
        self.out = out.with_suffix(".pyisession" if kind == "pyinstrument" else ".prof")

    @classmethod
    def choose(cls, out: Path, preferred: str = "auto") -> Profiler:
        """pyinstrument (sampling, low distortion) when installed, else cProfile (exact call
        counts, but it inflates the cost of small functions)."""
        if preferred == "auto":
            preferred = "pyinstrument" if importlib.util.find_spec("pyinstrument") else "cProfile"
        return cls(out, preferred)

    def launcher(self) -> list[str]:
        return ["-m", "loadtests.profiled_serve", self.kind, str(self.out), "--"]

    def start(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGUSR1)
        time.sleep(0.05)

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        """Ends the window and waits until the profile is on disk."""
        process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        size = -1
        while time.monotonic() < deadline:
            if self.out.exists() and self.out.stat().st_size == size > 0:
                return
            size = self.out.stat().st_size if self.out.exists() else -1
            time.sleep(0.5)

    def summarise(self, title: str, requests: int) -> str:
        if not self.out.exists():
            return f"== profile: {title}\n   (the profiler wrote nothing to {self.out})\n"
        heading = f"{title} [{self.kind}]"
        if self.kind == "pyinstrument":
            return render(heading, _pyinstrument_samples(self.out))
        calls = pstats.Stats(str(self.out)).total_calls  # type: ignore[attr-defined]
        heading += f"\n   {calls / max(requests, 1):.0f} function calls per request"
        return render(heading, _cprofile_samples(self.out))


def _is_c_function(path: str) -> bool:
    return not path or path.startswith("<built-in") or path == "~"


def _pyinstrument_samples(path: Path) -> list[Sample]:
    from pyinstrument.session import Session

    session = Session.load(str(path))
    root = session.root_frame()
    self_time: dict[tuple[str, int, str], float] = defaultdict(float)
    cumulative: dict[tuple[str, int, str], float] = defaultdict(float)
    areas: dict[tuple[str, int, str], str] = {}

    def walk(frame: Any, caller_area: str, on_path: frozenset[tuple[str, int, str]]) -> None:
        if frame.is_synthetic:
            return
        path = frame.file_path or ""
        key = (path, frame.line_no or 0, frame.function or "?")
        area = caller_area if _is_c_function(path) else area_of(path)
        areas.setdefault(key, area)
        self_time[key] += frame.total_self_time
        if key not in on_path:  # recursion counts once towards cumulative time
            cumulative[key] += frame.time
        inner = on_path | {key}
        for child in frame.children:
            walk(child, area, inner)

    if root is not None:
        walk(root, "event loop (uvloop C code, epoll, socket I/O)", frozenset())
    return [Sample(k[0], k[1], k[2], self_time[k], cumulative[k], areas[k]) for k in self_time]


def _cprofile_samples(path: Path) -> list[Sample]:
    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    samples = []
    for (file, line, func), (_cc, _nc, tt, ct, callers) in table.items():
        area = area_of(str(file))
        if _is_c_function(str(file)) and callers:
            # the caller that spent the most time in it
            top_caller = max(callers.items(), key=lambda kv: kv[1][3])[0]
            area = area_of(str(top_caller[0]))
        samples.append(Sample(str(file), int(line), str(func), float(tt), float(ct), area))
    return samples
