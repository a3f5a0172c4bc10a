"""Where webhooks may be sent: the SSRF guard.

In production a subscription URL must be https, carry no credentials, and resolve only to
public (globally routable) addresses: loopback, private (RFC 1918, unique-local), shared
(100.64.0.0/10), link-local (the cloud metadata service at 169.254.169.254), multicast,
reserved and unspecified addresses are refused, also when embedded in IPv6, and the
same rule is applied again to every connection the delivery job makes (`PublicOnlyResolver`),
so a name that later resolves elsewhere (DNS rebinding) is still refused. Redirects are never
followed. Development and testing allow private targets (WEBHOOK_ALLOW_PRIVATE), so a receiver
on localhost works.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from tornado.netutil import DefaultExecutorResolver

from server.domain.errors import FieldError, ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IPAddress) -> bool:
    """Globally routable, also for an IPv4 address carried inside IPv6 (mapped, 6to4, Teredo).

    `is_global` rather than a list of ranges to refuse: the list misses some, such as the
    shared address space 100.64.0.0/10 (carrier NAT, some cluster networks, a cloud's metadata
    service at 100.100.100.200)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]  # the client's address
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


def _refused(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError("url", message)])


async def check_target(url: str, *, allow_private: bool, require_https: bool) -> str:
    """`url` when webhooks may go there; ValidationFailed naming `url` otherwise."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        raise _refused("the URL is malformed") from None
    schemes = ("https",) if require_https else ("http", "https")
    if parts.scheme not in schemes:
        raise _refused("the URL must be " + " or ".join(schemes))
    if not parts.hostname:
        raise _refused("the URL needs a host")
    if parts.username or parts.password:
        raise _refused("the URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refused("the URL's port is invalid") from None
    if allow_private:
        return url
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError):
        raise _refused("the URL's host does not resolve") from None
    for info in infos:
        if not is_public(ipaddress.ip_address(info[4][0])):
            raise _refused("the URL resolves to a private, loopback or link-local address")
    return url


class PublicOnlyResolver(DefaultExecutorResolver):
    """Tornado resolver for webhook deliveries that never yields a non-public address."""

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        results = await super().resolve(host, port, family)
        allowed = [r for r in results if is_public(ipaddress.ip_address(r[1][0]))]
        if not allowed:
            raise OSError(f"{host} resolves only to non-public addresses; refused")
        return allowed
