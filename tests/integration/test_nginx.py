"""Debian's nginx with the project's own config (nginx/, rendered as the top of nginx.conf
describes) in front of two gateways sharing one PostgreSQL and one Redis: nginx spreads the
load over both, the per-client budget holds across them, and gRPC passes through.

Both gateways run in this test process (each with its own context, pools and limiter, as
`running_gateway` does), so their Prometheus registries are one; which gateway served a request
is recorded instead by hooking each gateway's request log and matching the `X-Request-ID` the
test sends (nginx passes a sane client id through; its access log carries it too).
"""

from __future__ import annotations

import asyncio
import datetime
import getpass
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import tornado.httpclient
import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.context import AppContext
from server.db import catalog as repo
from server.db import users
from server.rpc.pb.storefront.v1 import products_pb2, products_pb2_grpc
from server.services import catalog
from tests.conftest import ApiClient, Response, free_port, make_settings, start_gateway, wait_for
from tests.orders_support import insert_sellable
from tests.stream_support import SseStream, WsStream, stream_query
from workers.broker import build_context_with_jobs

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
NGINX_DIR = Path(__file__).resolve().parents[2] / "nginx"
PRODUCTS = "/api/v1/products"

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx)"
)


# ---- nginx with the project config on free local ports ---------------------------------------


def write_self_signed_cert(certs: Path) -> None:
    """A throwaway certificate for 127.0.0.1 / localhost (it is its own trust anchor)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certs.mkdir(exist_ok=True)
    (certs / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (certs / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def render_endpoints(
    template: str, http: int, https: int, grpc_port: int, rest: Sequence[int], rpc: Sequence[int]
) -> str:
    def servers(ports: Sequence[int]) -> str:
        return " ".join(f"server 127.0.0.1:{port};" for port in ports)

    rendered = (
        template.replace("@HTTP_PORT@", str(http))
        .replace("@HTTPS_PORT@", str(https))
        .replace("@GRPC_PORT@", str(grpc_port))
        .replace("@REST_SERVERS@", servers(rest))
        .replace("@GRPC_SERVERS@", servers(rpc))
    )
    assert "@" not in rendered, "local/endpoints.conf.in has a token this test does not know"
    return rendered


@dataclass
class Nginx:
    http_port: int
    https_port: int
    grpc_port: int
    ca_file: Path
    prefix: Path
    stderr_file: Path
    process: subprocess.Popen[bytes]

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")[-3000:]

    def access_log(self) -> list[dict[str, Any]]:
        path = self.prefix / "access.log"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    async def wait_listening(self, timeout: float = 10.0) -> None:
        async def all_ports_answer() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited ({self.process.returncode}):\n{self.stderr()}")
            for port in (self.http_port, self.https_port, self.grpc_port):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    return False
                writer.close()
                await writer.wait_closed()
            return True

        try:
            await wait_for(all_ports_answer, timeout=timeout, interval=0.02)
        except AssertionError as exc:
            raise AssertionError(f"nginx did not listen in time: {exc}\n{self.stderr()}") from None


@contextmanager
def nginx_in_front(
    rest: Sequence[int], rpc: Sequence[int], *, loopback_is_public: bool = False
) -> Iterator[Nginx]:
    """nginx/ copied to a temp dir, certificate and endpoints written, run in the foreground.
    `loopback_is_public`: the private-network allow lists leave loopback out, so the test's
    clients are treated as the internet."""
    assert NGINX is not None
    with tempfile.TemporaryDirectory(prefix="storefront-nginx-") as tmp:
        conf = Path(tmp) / "nginx"
        shutil.copytree(NGINX_DIR, conf)
        if loopback_is_public:
            server = conf / "snippets" / "https_server.conf"
            text = server.read_text()
            assert "allow 127.0.0.0/8;" in text
            server.write_text(text.replace("allow 127.0.0.0/8;", ""))
        write_self_signed_cert(conf / "certs")
        http, https, grpc_port = free_port(), free_port(), free_port()
        template = (NGINX_DIR / "local" / "endpoints.conf.in").read_text()
        (conf / "conf.d" / "endpoints.conf").write_text(
            render_endpoints(template, http, https, grpc_port, rest, rpc)
        )
        prefix = Path(tmp) / "prefix"
        prefix.mkdir()
        stderr_file = Path(tmp) / "nginx.stderr"
        with stderr_file.open("wb") as stderr:
            process = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    f"{prefix}/",
                    "-c",
                    str(conf / "nginx.conf"),
                    "-e",
                    "stderr",
                    "-g",
                    f"daemon off; user {getpass.getuser()};",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            ca_file = conf / "certs" / "fullchain.pem"
            yield Nginx(http, https, grpc_port, ca_file, prefix, stderr_file, process)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # fast shutdown: nothing is in flight now
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


# ---- two gateways behind it -----------------------------------------------------------------


@dataclass
class Replica:
    name: str
    ctx: AppContext
    http_port: int
    grpc_port: int


@dataclass
class Edge:
    nginx: Nginx
    replicas: list[Replica]
    # X-Request-ID -> name of the gateway that answered it (from the gateways' request logs)
    served_by: dict[str, str] = field(default_factory=dict)

    def client(self, source_ip: str = "127.0.0.1") -> EdgeClient:
        return EdgeClient(self.nginx.https_port, self.nginx.ca_file, source_ip)

    def upstream_names(self) -> dict[str, str]:
        """nginx's `$upstream_addr` -> gateway name, REST and gRPC listeners alike."""
        names: dict[str, str] = {}
        for r in self.replicas:
            names[f"127.0.0.1:{r.http_port}"] = r.name
            names[f"127.0.0.1:{r.grpc_port}"] = r.name
        return names


class EdgeClient(ApiClient):
    """ApiClient against nginx's TLS port, trusting the throwaway certificate, connecting from
    `source_ip` (any 127.0.0.0/8 address), which is the client address nginx sees."""

    def __init__(self, https_port: int, ca_file: Path, source_ip: str) -> None:
        super().__init__(f"https://127.0.0.1:{https_port}")
        self.http.close()
        self.http = tornado.httpclient.AsyncHTTPClient(
            force_instance=True,
            defaults={"ca_certs": str(ca_file), "network_interface": source_ip},
        )

    async def traced_get(self, path: str, **kwargs: Any) -> tuple[str, Response]:
        """GET with a fresh X-Request-ID, returned with the response so it can be traced."""
        request_id = f"t-{uuid.uuid4().hex}"
        headers = {"X-Request-ID": request_id, **kwargs.pop("headers", {})}
        response = await self.get(path, headers=headers, timeout=10, **kwargs)
        assert response.headers.get("X-Request-ID") == request_id, response
        return request_id, response


@asynccontextmanager
async def replica(
    database_url: str, name: str, served_by: dict[str, str], **env: str
) -> AsyncIterator[Replica]:
    """One gateway (own context, pools, limiter) on free ports whose request log notes, per
    X-Request-ID, that it was this gateway which answered."""
    context = await build_context_with_jobs(make_settings(database_url, **env))
    try:
        gateway, addresses = await start_gateway(context, "fast")
        app: tornado.web.Application = gateway.app
        log_request = app.settings["log_function"]

        def note_and_log(handler: tornado.web.RequestHandler) -> None:
            request_id = getattr(handler, "request_id", None)
            if request_id is not None:
                served_by[request_id] = name
            log_request(handler)

        app.settings["log_function"] = note_and_log
        try:
            yield Replica(name, context, addresses.http_port, addresses.grpc_port)
        finally:
            await gateway.stop_servers(1.0)
    finally:
        await context.close()


@asynccontextmanager
async def edge(
    database_url: str, *, loopback_is_public: bool = False, **env: str
) -> AsyncIterator[Edge]:
    served_by: dict[str, str] = {}
    async with (
        replica(database_url, "a", served_by, **env) as a,
        replica(database_url, "b", served_by, **env) as b,
    ):
        with nginx_in_front(
            [a.http_port, b.http_port],
            [a.grpc_port, b.grpc_port],
            loopback_is_public=loopback_is_public,
        ) as nginx:
            await nginx.wait_listening()
            yield Edge(nginx, [a, b], served_by)


def remaining(response: Response) -> int:
    return int(response.headers["RateLimit-Remaining"])


async def make_product(ctx: AppContext, price: int) -> repo.Product:
    return await insert_sellable(
        ctx.pool,
        {
            "sku": f"NGX-{uuid.uuid4().hex[:10]}",
            "name": "Edge kettle",
            "price": price,
            "currency": "USD",
            "stock": 3,
            "is_active": True,
        },
    )


# ---- the tests ------------------------------------------------------------------------------


async def test_nginx_spreads_rest_requests_over_both_gateways(
    database_url: str, redis_url: str
) -> None:
    async with edge(database_url, REDIS_URL=redis_url) as e:
        client = e.client()
        try:
            traced = [await client.traced_get(PRODUCTS) for _ in range(40)]
            assert [r.status for _, r in traced] == [200] * 40, traced[:3]
            served = [e.served_by[request_id] for request_id, _ in traced]
            counts = {name: served.count(name) for name in ("a", "b")}
            assert counts["a"] + counts["b"] == 40
            assert counts["a"] >= 10 and counts["b"] >= 10, counts

            # nginx's access log names, for each of our request ids, the gateway that answered.
            upstreams = e.upstream_names()

            def logged() -> dict[str, str]:
                return {
                    line["request_id"]: upstreams.get(line["upstream"], line["upstream"])
                    for line in e.nginx.access_log()
                    if line["request_id"].startswith("t-")
                }

            await wait_for(lambda: len(logged()) >= 40, timeout=5)
            assert logged() == {request_id: e.served_by[request_id] for request_id, _ in traced}

            # Edge behaviour on the way: its own headers, and plain HTTP only serves probes.
            _, sample = traced[0]
            assert sample.headers["X-Content-Type-Options"] == "nosniff"
            assert "max-age=" in sample.headers["Strict-Transport-Security"]
            plain = f"http://127.0.0.1:{e.nginx.http_port}"
            redirect = await client.get(f"{plain}{PRODUCTS}?limit=1", timeout=10)
            assert redirect.status == 301
            assert redirect.headers["Location"] == (
                f"https://127.0.0.1:{e.nginx.https_port}{PRODUCTS}?limit=1"
            )
            healthz = await client.get(f"{plain}/healthz", timeout=10)
            assert healthz.status == 200 and healthz.json() == {"status": "ok"}
        finally:
            client.close()


async def test_shared_rate_limit_holds_across_both_gateways_behind_nginx(
    database_url: str, redis_url: str
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "RATE_LIMIT_ANON": "10/minute",
        "TRUSTED_PROXIES": "127.0.0.1/32",
    }
    async with edge(database_url, **env) as e:
        # The client connects from 127.0.0.2: the gateways see nginx (127.0.0.1) as the peer
        # and must take the client from nginx's X-Forwarded-For to budget it.
        client, neighbour = e.client("127.0.0.2"), e.client("127.0.0.3")
        try:
            traced = [await client.traced_get(PRODUCTS) for _ in range(15)]
            statuses = [r.status for _, r in traced]
            assert statuses == [200] * 10 + [429] * 5, traced
            allowed, refused = traced[:10], traced[10:]

            # One budget counting down whichever gateway answers.
            assert [remaining(r) for _, r in allowed] == list(range(9, -1, -1))
            assert {e.served_by[rid] for rid, _ in allowed} == {"a", "b"}
            assert {e.served_by[rid] for rid, _ in refused} == {"a", "b"}
            for _, r in refused:
                # The gateway's refusal (nginx's own edge 429 has neither RateLimit-* nor this
                # Retry-After: 10/minute gives a unit back every 6 s).
                assert 1 <= int(r.headers["Retry-After"]) <= 6, r.headers
                assert remaining(r) == 0 and r.headers["RateLimit-Limit"] == "10"
                assert r.headers["Content-Type"].startswith("application/problem+json")
                assert r.json()["status"] == 429

            # A forged X-Forwarded-For does not buy a fresh budget: nginx appends the real peer.
            _, forged = await client.traced_get(
                PRODUCTS, headers={"X-Forwarded-For": "203.0.113.7"}
            )
            assert forged.status == 429

            # Another client address has its own, untouched budget.
            _, other = await neighbour.traced_get(PRODUCTS)
            assert other.status == 200 and remaining(other) == 9
        finally:
            client.close()
            neighbour.close()


async def test_grpc_passes_through_nginx(database_url: str, redis_url: str) -> None:
    async with edge(database_url, REDIS_URL=redis_url) as e:
        product = await make_product(e.replicas[0].ctx, price=2599)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{e.nginx.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "storefront.v1.ProductService"):
                request = health_pb2.HealthCheckRequest(service=service)
                reply = await health.Check(request, timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

            products = products_pb2_grpc.ProductServiceStub(channel)
            for _ in range(4):
                got = await products.GetProduct(
                    products_pb2.GetProductRequest(id=product.id), timeout=5
                )
                assert (got.id, got.sku, got.price, got.currency) == (
                    product.id,
                    product.sku,
                    2599,
                    "USD",
                )
            listed = await products.ListProducts(products_pb2.ListProductsRequest(), timeout=5)
            assert product.id in [p.id for p in listed.items]

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await products.GetProduct(products_pb2.GetProductRequest(id=2**40), timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        # The public TLS listener carries storefront.v1 as well.
        credentials = grpc.ssl_channel_credentials(e.nginx.ca_file.read_bytes())
        target = f"127.0.0.1:{e.nginx.https_port}"
        async with grpc.aio.secure_channel(target, credentials) as tls_channel:
            got = await products_pb2_grpc.ProductServiceStub(tls_channel).GetProduct(
                products_pb2.GetProductRequest(id=product.id), timeout=5
            )
            assert got.sku == product.sku

        # nginx spread the calls over both gateways' gRPC listeners.
        upstreams = e.upstream_names()
        grpc_ports = {f"127.0.0.1:{r.grpc_port}" for r in e.replicas}

        def grpc_upstreams() -> set[str]:
            return {
                upstreams[line["upstream"]]
                for line in e.nginx.access_log()
                if line["upstream"] in grpc_ports
                and line["uri"] == "/storefront.v1.ProductService/GetProduct"
            }

        await wait_for(lambda: grpc_upstreams() == {"a", "b"}, timeout=5)


async def test_live_streams_pass_through_nginx_and_hear_changes_made_on_either_gateway(
    database_url: str, redis_url: str
) -> None:
    async with edge(database_url, REDIS_URL=redis_url) as e:
        a, b = e.replicas
        product = await make_product(a.ctx, price=1999)
        customer = await users.create_user(
            a.ctx.pool, f"edge-{uuid.uuid4().hex[:8]}@example.com", "Edge", "no-login", "customer"
        )
        token = a.ctx.tokens.issue_access(customer.id, customer.role)
        tls = ssl.create_default_context(cafile=str(e.nginx.ca_file))
        path = stream_query([product.id], token=token)
        sse = await SseStream.open(e.nginx.https_port, path, tls=tls)
        ws = await WsStream.open(e.nginx.https_port, path, ca_file=str(e.nginx.ca_file))
        try:
            assert sse.status == 200 and "text/event-stream" in sse.head.lower()
            assert (await sse.next() or {})["type"] == "ready"
            assert (await ws.next() or {})["type"] == "ready"
            for replica_ctx, delta in ((a.ctx, 2), (b.ctx, 5)):  # a change on each gateway
                changed = await catalog.adjust_stock(replica_ctx, product.id, delta)
                for stream in (sse, ws):
                    heard = await stream.next_of("stock.changed")
                    assert heard["data"]["stock"] == changed.stock
        finally:
            sse.close()
            ws.close()

        def logged() -> list[str]:
            return [line["uri"] for line in e.nginx.access_log() if "stream" in line["uri"]]

        # A stream's line is written once nginx sees it end: the WebSocket's at once, the SSE
        # stream's only at its next heartbeat.
        await wait_for(lambda: len(logged()) >= 1)
        assert all("access_token=[filtered]" in uri for uri in logged()), logged()
        assert token not in e.nginx.prefix.joinpath("access.log").read_text()


async def test_metrics_are_private_with_or_without_a_slash_and_readiness_is_budgeted(
    database_url: str, redis_url: str
) -> None:
    async with edge(database_url, loopback_is_public=True, REDIS_URL=redis_url) as front:
        client = front.client("127.0.0.31")
        for path in ("/metrics", "/metrics/"):
            assert (await client.get(path, timeout=10)).status == 403, path
        answers = await asyncio.gather(*(client.get("/readyz", timeout=10) for _ in range(80)))
        statuses = {r.status for r in answers}
        assert statuses <= {200, 429} and 429 in statuses  # 20/s with a burst of 40
        assert (await front.client("127.0.0.32").get("/readyz", timeout=10)).status == 200
