"""What the Kubernetes schemas cannot say about the rendered manifests (k8s/).

    python scripts/check_k8s.py --pair APP.yaml MIGRATE.yaml [--pair ...] --secret SECRET.yaml

APP.yaml / MIGRATE.yaml are `kubectl kustomize` renderings of one environment (k8s/base and
k8s/base/migrate, or an overlay and its migrate/); SECRET.yaml is the example Secret. Checked:
the gateway's probes (/healthz, /readyz, a startup probe), that it listens beyond loopback, and
that terminationGracePeriodSeconds outlasts preStop plus the drain grace (`--grace` in its
args, else the default in server/cli.py); requests (and a memory limit) and a locked-down
securityContext on every container; one scheduler with Recreate; the migrate Job; HPA and PDB;
one image per environment; the recommended labels; environment variable names the code reads.
Exit status 1, with one line per problem, when anything is off.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
DEFAULT_TERMINATION_GRACE = 30  # Kubernetes' default when the field is absent

problems: list[str] = []


def fail(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def load(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def cli_drain_grace() -> float:
    """The default of `storefront serve --grace` (seconds), read from server/cli.py."""
    tree = ast.parse((ROOT / "server" / "cli.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "--grace"
        ):
            for kw in node.keywords:
                if kw.arg == "default":
                    return float(ast.literal_eval(kw.value))
    raise SystemExit("check_k8s: no `--grace` default found in server/cli.py")


def known_env_names() -> set[str]:
    """Every upper-case string literal of the settings loader and the CLI (a superset of the
    environment variables they read: enough to catch a misspelt name)."""
    names: set[str] = set()
    for rel in ("server/config.py", "server/cli.py"):
        text = (ROOT / rel).read_text(encoding="utf-8")
        names.update(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", text))
    return names


def option(args: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` in a container's args."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def prestop_seconds(container: dict[str, Any]) -> float | None:
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    command = (pre.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        return float(command[1])
    return None


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name), None)


def check_labels(where: str, obj: dict[str, Any]) -> None:
    labels = obj["metadata"].get("labels") or {}
    missing = [k for k in LABELS if k not in labels]
    if missing:
        fail(where, f"missing labels {', '.join(missing)}")
    elif labels["app.kubernetes.io/part-of"] != "storefront":
        fail(where, "app.kubernetes.io/part-of is not storefront")


def check_workload(where: str, obj: dict[str, Any]) -> None:
    spec = pod_spec(obj)
    check_labels(f"{where} pod template", obj["spec"]["template"])
    pod_sc = spec.get("securityContext") or {}
    for c in containers(obj):
        at = f"{where} container {c['name']}"
        res = c.get("resources") or {}
        for kind, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
            absent = [k for k in keys if k not in (res.get(kind) or {})]
            if absent:
                fail(at, f"no resources.{kind}.{'/'.join(absent)}")
        sc = c.get("securityContext") or {}
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False)):
            fail(at, "runAsNonRoot is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(at, "allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(at, "readOnlyRootFilesystem is not true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            fail(at, "capabilities.drop does not include ALL")


def check_gateway(where: str, objs: list[dict[str, Any]], default_grace: float) -> None:
    gateway = find(objs, "Deployment", "gateway")
    if gateway is None:
        fail(where, "no Deployment gateway")
        return
    at = f"{where} Deployment gateway"
    main = next((c for c in pod_spec(gateway)["containers"] if c["name"] == "gateway"), None)
    if main is None:
        fail(at, "no container named gateway")
        return
    args = [str(a) for a in main.get("args") or []]
    if "serve" not in args:
        fail(at, "container does not run `storefront serve`")
    host = option(args, "--host")
    if host not in ("0.0.0.0", "::"):
        fail(at, f"--host is {host!r}: the default 127.0.0.1 is unreachable for probes")
    ports = {p.get("name"): p["containerPort"] for p in main.get("ports") or []}
    http_port = int(option(args, "--http-port") or 8000)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (main.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path:
            fail(at, f"{probe} is not an httpGet on {path}")
        elif ports.get(get.get("port"), get.get("port")) != http_port:
            fail(at, f"{probe} does not target the REST port {http_port}")
    if not main.get("startupProbe"):
        fail(at, "no startupProbe")
    grace = float(option(args, "--grace") or default_grace)
    sleep = prestop_seconds(main)
    if sleep is None:
        fail(at, "no preStop sleep (endpoints must be withdrawn before the drain)")
        sleep = 0.0
    termination = pod_spec(gateway).get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE)
    if not termination > sleep + grace:
        fail(
            at,
            f"terminationGracePeriodSeconds {termination} is not more than preStop {sleep:g} s "
            f"+ drain grace {grace:g} s",
        )
    hpa = find(objs, "HorizontalPodAutoscaler", "gateway")
    if hpa is None or hpa["apiVersion"] != "autoscaling/v2":
        fail(where, "no autoscaling/v2 HorizontalPodAutoscaler gateway")
    elif not any(
        m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
        for m in hpa["spec"].get("metrics") or []
    ):
        fail(where, "HorizontalPodAutoscaler gateway does not scale on CPU")
    for name in ("gateway", "worker"):
        if find(objs, "PodDisruptionBudget", name) is None:
            fail(where, f"no PodDisruptionBudget {name}")


def check_scheduler(where: str, objs: list[dict[str, Any]]) -> None:
    scheduler = find(objs, "Deployment", "scheduler")
    if scheduler is None:
        fail(where, "no Deployment scheduler")
    elif (
        scheduler["spec"].get("replicas") != 1
        or scheduler["spec"].get("strategy", {}).get("type") != "Recreate"
    ):
        fail(where, "Deployment scheduler must have replicas 1 and strategy Recreate")


def check_migrate(where: str, objs: list[dict[str, Any]]) -> None:
    job = find(objs, "Job", "migrate")
    if job is None:
        fail(where, "no Job migrate")
        return
    if "migrate" not in (pod_spec(job)["containers"][0].get("args") or []):
        fail(where, "Job migrate does not run `storefront migrate`")
    for field in ("backoffLimit", "ttlSecondsAfterFinished"):
        if field not in job["spec"]:
            fail(where, f"Job migrate has no {field}")


def check_env(where: str, objs: list[dict[str, Any]], known: set[str], secret: str) -> None:
    for obj in objs:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("storefront-config"):
            for key in sorted(set(obj.get("data") or {}) - known):
                fail(where, f"ConfigMap key {key} is not a variable the code reads")
        if obj["kind"] not in WORKLOADS:
            continue
        for c in containers(obj):
            at = f"{where} {obj['kind']} {obj['metadata']['name']} container {c['name']}"
            for var in c.get("env") or []:
                if var["name"] not in known:
                    fail(at, f"env {var['name']} is not a variable the code reads")
            for source in c.get("envFrom") or []:
                ref = (source.get("secretRef") or {}).get("name")
                if ref is not None and ref != secret:
                    fail(at, f"envFrom Secret {ref!r} is not the documented {secret!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pair", nargs=2, action="append", required=True, metavar=("APP", "MIGRATE")
    )
    parser.add_argument("--secret", required=True, help="the example Secret")
    args = parser.parse_args()

    default_grace = cli_drain_grace()
    known = known_env_names()
    secret_doc = load(args.secret)[0]
    secret_name = secret_doc["metadata"]["name"]
    check_labels(args.secret, secret_doc)
    secret_keys = set(secret_doc.get("stringData") or {}) | set(secret_doc.get("data") or {})
    for key in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET"):
        if key not in secret_keys:
            fail(args.secret, f"no {key}")
    for key in sorted(secret_keys - known):
        fail(args.secret, f"key {key} is not a variable the code reads")

    for app_path, migrate_path in args.pair:
        app, migrate = load(app_path), load(migrate_path)
        for path, objs in ((app_path, app), (migrate_path, migrate)):
            for obj in objs:
                where = f"{path} {obj['kind']} {obj['metadata']['name']}"
                check_labels(where, obj)
                if obj["kind"] in WORKLOADS:
                    check_workload(where, obj)
            check_env(path, objs, known, secret_name)
        check_gateway(app_path, app, default_grace)
        check_scheduler(app_path, app)
        check_migrate(migrate_path, migrate)
        images = {
            c["image"] for obj in app + migrate if obj["kind"] in WORKLOADS for c in containers(obj)
        }
        if len(images) != 1:
            fail(
                f"{app_path} + {migrate_path}", f"more than one image: {', '.join(sorted(images))}"
            )

    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"k8s checks passed (drain grace default {default_grace:g} s from server/cli.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
