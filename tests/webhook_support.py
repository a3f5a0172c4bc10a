"""A real local receiver for outbound webhooks: an HTTP (and an HTTPS, self-signed) server on
free ports that records what it is sent, and answers by path: `/ok` 200, `/fail` 500, `/slow`
after 3 s, `/redirect` a 302 to `/ok`."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import tornado.httpserver
import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loadtests.harness import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    received: list[Received] = field(default_factory=list)
    port: int = 0
    tls_port: int = 0
    servers: list[tornado.httpserver.HTTPServer] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tls_url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.tls_port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def start(self, cert_dir: Path) -> None:
        app = tornado.web.Application([(r"(/.*)", _Receive, {"receiver": self})])
        self.port = free_port()
        self.servers.append(app.listen(self.port, address="127.0.0.1"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self_signed(cert_dir))
        self.tls_port = free_port()
        tls = tornado.httpserver.HTTPServer(app, ssl_options=context)
        tls.listen(self.tls_port, address="127.0.0.1")
        self.servers.append(tls)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class _Receive(tornado.web.RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def post(self, path: str) -> None:
        self.receiver.received.append(
            Received(path, dict(self.request.headers.items()), self.request.body)
        )
        if path == "/fail":
            self.set_status(500)
        elif path == "/slow":
            await asyncio.sleep(3)
        elif path == "/redirect":
            self.redirect("/ok", status=302)
            return
        self.finish(b"ok")


def self_signed(directory: Path) -> tuple[str, str]:
    """A certificate no client trusts (its own issuer): (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)
