"""Where webhooks may go: no private, loopback or link-local address (SSRF); https in production.

The host is resolved when an endpoint is registered and again before every attempt, so a name
that later points inside the network is refused too. (A resolver that answers differently
between our check and the connection can still slip through; redirects are never followed.)
"""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from app.core.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(Exception):
    """The URL may not receive webhooks; the message says why."""


def check_url(url: str, settings: Settings) -> tuple[str, int]:
    """(host, port) of an acceptable URL, or UnsafeTarget."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("the URL must be http or https")
    if settings.environment == "production" and parts.scheme != "https":
        raise UnsafeTarget("the URL must be https")
    if parts.username or parts.password:
        raise UnsafeTarget("the URL may not carry credentials")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeTarget("the URL's port is not valid") from exc
    return host, port


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeTarget(f"the host {host!r} does not resolve") from exc
    # The scope id ("%eth0") of a link-local IPv6 address is dropped before parsing.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_target(url: str, settings: Settings) -> None:
    """UnsafeTarget unless the URL is acceptable and every address of its host is public."""
    host, port = check_url(url, settings)
    if settings.webhook_allow_private_targets:
        return
    addresses = await resolve(host, port)
    if not addresses:
        raise UnsafeTarget(f"the host {host!r} does not resolve")
    for address in addresses:
        if not _is_public(address):
            raise UnsafeTarget(f"{host!r} resolves to a private, loopback or link-local address")
