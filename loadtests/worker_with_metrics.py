"""`storefront worker` with its Prometheus registry served on a port, for `make loadtest`.

With REDIS_URL set the background jobs run in the worker, whose metrics (task runs and
durations) a gateway's /metrics cannot show; this wrapper exposes them so the load test can
report task durations. Usage: `python -m loadtests.worker_with_metrics PORT`.
"""

from __future__ import annotations

import sys

from prometheus_client import start_http_server

from server import metrics
from server.cli import main


def run(argv: list[str]) -> int:
    start_http_server(int(argv[0]), addr="127.0.0.1", registry=metrics.REGISTRY)
    return main(["worker"])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
