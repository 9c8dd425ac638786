"""Webhook targets (SSRF): an IPv6 address that carries a private, loopback or link-local IPv4
address is refused like that IPv4 address, in every form and spelling, in production too."""

import ipaddress
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient

from app.core.config import Settings
from app.main import create_app
from app.webhooks.targets import UnsafeTarget, check_target, embedded_ipv4
from tests.factories import assert_problem, auth, make_key
from tests.settings import settings_for_tests

STRICT = settings_for_tests(webhook_allow_private_targets=False)
PRODUCTION = Settings(
    environment="production",
    ip_hash_salt="not-the-default",
    pseudonym_key="not-the-default-either",
    database_url="postgresql+asyncpg://db.internal/referrals",
)

# The forms of the attack run, and the other spellings of the same thing.
REFUSED = [
    # NAT64, well-known prefix (RFC 6052): the last 32 bits
    "64:ff9b::a9fe:a9fe",  # 169.254.169.254, the cloud metadata service
    "64:ff9b::169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::10.0.0.1",
    "64:ff9b::c0a8:1",
    "0064:ff9b:0000:0000:0000:0000:a9fe:a9fe",
    # NAT64, local-use prefix (RFC 8215): refused whatever it embeds
    "64:ff9b:1::a9fe:a9fe",
    "64:ff9b:1:a9fe:a9:fe00::",
    "64:ff9b:1::808:808",
    # 6to4 (2002::/16): bits 16-47
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "2002:c0a8:101:1::1",
    "2002:a00:1::",
    "2002:6440:1::",  # 100.64.0.1, shared address space
    # IPv4-compatible (deprecated): ::a.b.c.d
    "::7f00:1",
    "::127.0.0.1",
    "::a9fe:a9fe",
    "::10.1.2.3",
    "::",
    # IPv4-mapped, every spelling
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::FFFF:7F00:0001",
    "0:0:0:0:0:ffff:7f00:1",
    "0000:0000:0000:0000:0000:ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "::ffff:10.0.0.1",
    # IPv4-translated (SIIT): ::ffff:0:a.b.c.d
    "::ffff:0:a9fe:a9fe",
    "::ffff:0:127.0.0.1",
    "::ffff:0:c0a8:1",
    # Teredo (2001::/32): a private server, or a private client (stored inverted)
    "2001:0:7f00:1::",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # client 10.0.0.1
    "2001:0:808:808:8000:63bf:5601:5601",  # client 169.254.169.254
    # plain IPv6 that is not public, for contrast
    "::1",
    "fe80::1",
    "fc00::1",
    "ff02::1",
]
PUBLIC = [
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "64:ff9b::1.1.1.1",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "::ffff:8.8.8.8",
    "2606:4700:4700::1111",
]


def url(address: str, scheme: str = "http") -> str:
    return f"{scheme}://[{address}]:8443/hook"


@pytest.mark.parametrize("address", REFUSED)
async def test_an_embedded_private_ipv4_is_refused(address: str) -> None:
    with pytest.raises(UnsafeTarget, match="private, loopback or link-local"):
        await check_target(url(address), STRICT)
    with pytest.raises(UnsafeTarget, match="private, loopback or link-local"):
        await check_target(url(address, "https"), PRODUCTION)


@pytest.mark.parametrize("address", PUBLIC)
async def test_an_embedded_public_ipv4_is_a_public_target(address: str) -> None:
    await check_target(url(address), STRICT)
    await check_target(url(address, "https"), PRODUCTION)


PRIVATE_IPV4 = [
    "127.0.0.1",
    "127.255.0.9",
    "10.20.30.40",
    "172.16.5.4",
    "192.168.0.10",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "198.18.0.1",
    "224.0.0.1",
]


def ipv6_forms(ipv4: str) -> dict[str, ipaddress.IPv6Address]:
    """Every way an IPv6 address can carry `ipv4`, built by hand from the RFCs' bit layouts."""
    v4 = int(ipaddress.IPv4Address(ipv4))
    public_server = int(ipaddress.IPv4Address("65.54.227.120"))
    return {
        "mapped": ipaddress.IPv6Address((0xFFFF << 32) | v4),
        "translated (SIIT)": ipaddress.IPv6Address((0xFFFF << 48) | v4),
        "compatible": ipaddress.IPv6Address(v4),
        "NAT64": ipaddress.IPv6Address((0x64FF9B << 96) | v4),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80) | 1),
        "Teredo server": ipaddress.IPv6Address((0x20010000 << 96) | (v4 << 64)),
        "Teredo client": ipaddress.IPv6Address(
            (0x20010000 << 96) | (public_server << 64) | (v4 ^ 0xFFFFFFFF)
        ),
    }


@pytest.mark.parametrize("ipv4", PRIVATE_IPV4)
async def test_every_form_of_every_private_ipv4_is_refused(ipv4: str) -> None:
    with pytest.raises(UnsafeTarget):
        await check_target(f"http://{ipv4}/hook", STRICT)
    for form, address in ipv6_forms(ipv4).items():
        assert ipaddress.IPv4Address(ipv4) in embedded_ipv4(address), form
        with pytest.raises(UnsafeTarget):
            await check_target(url(str(address)), STRICT)
        with pytest.raises(UnsafeTarget):
            await check_target(url(str(address), "https"), PRODUCTION)


def test_the_embedded_address_is_read_from_the_right_bits() -> None:
    # Against the ipaddress module's own readings where it has one.
    for form, address in ipv6_forms("203.0.113.7").items():
        assert ipaddress.IPv4Address("203.0.113.7") in embedded_ipv4(address), form
    address = ipaddress.IPv6Address("2002:cb00:7107::1")
    assert embedded_ipv4(address) == [address.sixtofour]
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert teredo.teredo is not None
    assert embedded_ipv4(teredo) == list(teredo.teredo)
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700:4700::1111")) == []


async def test_registration_refuses_them_over_http(client: AsyncClient, app: Any) -> None:
    # `client` empties the tables first: the strict app below shares the database.
    strict = create_app(STRICT)
    try:
        transport = ASGITransport(app=strict)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            admin = await make_key(strict)
            for address in (
                "64:ff9b::a9fe:a9fe",
                "2002:7f00:1::",
                "::7f00:1",
                "::ffff:0:a9fe:a9fe",
            ):
                response = await http.post(
                    "/v1/webhook-endpoints",
                    json={"url": url(address), "event_types": ["reward.created"]},
                    headers=auth(admin),
                )
                assert_problem(response, 422, "invalid_webhook_url")
            listed = await http.get("/v1/webhook-endpoints", headers=auth(admin))
            assert listed.json()["data"] == []
    finally:
        await strict.state.webhook_dispatcher.aclose()
        await strict.state.engine.dispose()
