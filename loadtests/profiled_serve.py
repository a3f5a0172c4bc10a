"""`storefront serve` with a profiler that runs only while the harness says so.

`python -m loadtests.profiled_serve KIND OUT -- serve ARGS...` starts the gateway as usual; SIGUSR1
starts the profiler (pyinstrument, or cProfile when KIND is `cProfile`), SIGUSR2 stops it and
writes OUT. So the profile holds the load window only, not the imports and start-up before it.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from server.cli import main


class WindowedProfiler:
    def __init__(self, kind: str, out: Path) -> None:
        self.kind = kind
        self.out = out
        self._profiler: Any = None

    def start(self, _signum: int, _frame: FrameType | None) -> None:
        if self._profiler is not None:
            return
        if self.kind == "pyinstrument":
            from pyinstrument import Profiler

            self._profiler = Profiler(interval=0.0005, async_mode="disabled")
        else:
            self._profiler = cProfile.Profile()
        if self.kind == "pyinstrument":
            self._profiler.start()
        else:
            self._profiler.enable()

    def stop(self, _signum: int, _frame: FrameType | None) -> None:
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return
        if self.kind == "pyinstrument":
            session = profiler.stop()
            session.save(str(self.out))
        else:
            profiler.disable()
            profiler.dump_stats(str(self.out))


def run(argv: list[str]) -> int:
    kind, out, separator, *serve_argv = argv
    if separator != "--":
        raise SystemExit("usage: profiled_serve KIND OUT -- serve ARGS...")
    profiler = WindowedProfiler(kind, Path(out))
    signal.signal(signal.SIGUSR1, profiler.start)
    signal.signal(signal.SIGUSR2, profiler.stop)
    return main(serve_argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
