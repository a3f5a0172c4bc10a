"""The `storefront` command: serve, migrate, createadmin, seed, worker, scheduler."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from server.config import ConfigError, Settings, load_settings
from server.observability import configure_logging, configure_sentry

log = logging.getLogger("storefront")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storefront", description="Storefront gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="REST and gRPC on one asyncio loop")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=50051)
    serve.add_argument(
        "--http-impl",
        choices=("fast", "tornado"),
        default="fast",
        help="HTTP/1.1 connection: httptools (fast) or Tornado's own",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N gateway processes sharing the ports with SO_REUSEPORT",
    )
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to drain on shutdown")

    sub.add_parser("migrate", help="apply pending SQL migrations (idempotent)")

    admin = sub.add_parser(
        "createadmin",
        help="create or promote an admin",
        description="Create an admin, or promote an existing user and reset its password;"
        " promoting signs that user out everywhere (its refresh tokens are revoked).",
    )
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)

    seed = sub.add_parser("seed", help="fill a demo catalog")
    seed.add_argument("--products", type=int, required=True)
    seed.add_argument(
        "--categories",
        type=int,
        default=None,
        help="categories (default: one per 2000 products, between 10 and 500)",
    )

    sub.add_parser("worker", help="taskiq worker (Redis broker)")
    sub.add_parser("scheduler", help="taskiq scheduler (Redis broker)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"storefront: configuration error: {exc}", file=sys.stderr)
        return 2
    # Only the gateway batches its lines (it flushes them on a timer, see runtime.serve).
    configure_logging(settings.log_level, batched=args.command == "serve")
    configure_sentry(settings.sentry_dsn, settings.env)
    command = args.command
    if command == "serve":
        return _serve(settings, args)
    if command == "migrate":
        return asyncio.run(_migrate(settings))
    if command == "createadmin":
        return asyncio.run(_createadmin(settings, args.email, args.password))
    if command == "seed":
        return asyncio.run(_seed(settings, args.products, args.categories))
    if command in ("worker", "scheduler"):
        from workers import main as workers_main

        return workers_main.run(command, settings)
    return 2


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    if args.workers > 1:
        return _serve_many(
            args.workers,
            [
                "serve",
                "--host",
                host,
                "--http-port",
                str(args.http_port),
                "--grpc-port",
                str(args.grpc_port),
                "--http-impl",
                args.http_impl,
                "--grace",
                str(args.grace),
            ],
        )
    _install_uvloop()
    from server.runtime import serve
    from workers.broker import build_context_with_jobs

    async def run() -> None:
        ctx = await build_context_with_jobs(settings)
        await serve(
            ctx,
            host,
            args.http_port,
            args.grpc_port,
            http_impl=args.http_impl,
            reuse_port=os.environ.get("STOREFRONT_REUSE_PORT") == "1",
            grace=args.grace,
        )

    asyncio.run(run())
    return 0


def _serve_many(workers: int, argv: list[str]) -> int:
    """N identical single-process gateways on the same ports (SO_REUSEPORT); the kernel
    spreads connections. State is shared only through PostgreSQL and Redis."""
    env = {**os.environ, "STOREFRONT_REUSE_PORT": "1"}
    children = [
        subprocess.Popen([sys.executable, "-m", "server", *argv], env=env) for _ in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(child.wait() for child in children)


async def _migrate(settings: Settings) -> int:
    from server.context import resolve_database_url
    from server.db import migrations
    from server.db.pool import connect

    dsn, embedded = resolve_database_url(settings)
    try:
        conn = await connect(dsn)
        try:
            applied = await migrations.migrate(conn)
        finally:
            await conn.close()
    finally:
        if embedded is not None:
            embedded.stop()
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


async def _createadmin(settings: Settings, email: str, password: str) -> int:
    from server.context import build_context
    from server.services.accounts import create_or_promote_admin

    if len(password) < 10:
        print("storefront: the password must be at least 10 characters", file=sys.stderr)
        return 2
    if "@" not in email:
        print("storefront: the e-mail address is not valid", file=sys.stderr)
        return 2
    ctx = await build_context(settings)
    try:
        user, created = await create_or_promote_admin(ctx, email, password)
    finally:
        await ctx.close()
    print(f"{'created' if created else 'promoted'} admin {user.email} (id {user.id})")
    return 0


async def _seed(settings: Settings, products: int, categories: int | None) -> int:
    from server.context import build_context
    from server.db.seed import seed_catalog

    ctx = await build_context(settings)
    try:
        added_categories, added_products = await seed_catalog(
            ctx.pool, products, categories, currency=settings.store_currency
        )
    finally:
        await ctx.close()
    print(f"seeded {added_categories} categories and {added_products} products")
    return 0
