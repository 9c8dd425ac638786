"""Where webhooks may go: no private, loopback or link-local address (SSRF); https in production.

An IPv6 address that carries an IPv4 address (mapped, SIIT, compatible, NAT64, 6to4, Teredo) is
judged by that IPv4 address too: [64:ff9b::a9fe:a9fe] is 169.254.169.254 behind a NAT64.

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


# IPv6 addresses that carry an IPv4 address, which is where a packet to them ends up: NAT64's
# well-known prefix (RFC 6052, the last 32 bits), IPv4-compatible (RFC 4291, deprecated) and
# SIIT's IPv4-translated ::ffff:0:a.b.c.d (RFC 2765). IPv4-mapped (::ffff:a.b.c.d), 6to4
# (2002::/16) and Teredo (2001::/32, server and client) are read by the ipaddress module.
LAST_32_BITS_ARE_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)
# NAT64 for local use (RFC 8215): where the IPv4 sits depends on the operator's prefix length,
# and nothing public is behind it.
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (mapped, NAT64, 6to4, Teredo…), if any."""
    found = [address.ipv4_mapped] if address.ipv4_mapped is not None else []
    if any(address in network for network in LAST_32_BITS_ARE_IPV4):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def is_public(address: IPAddress) -> bool:
    """Whether webhooks may go to the address: globally reachable, not multicast, and no IPv4
    inside it that is private, loopback, link-local or otherwise not global."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL_USE:
            return False
        embedded = embedded_ipv4(address)
        if not all(is_public(inner) for inner in embedded):
            return False
        if address.ipv4_mapped is not None:
            return True  # the IPv4 address itself, written as IPv6
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
        if not is_public(address):
            raise UnsafeTarget(f"{host!r} resolves to a private, loopback or link-local address")
