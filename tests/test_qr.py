"""QR codes of referral links: decoded back to the link, followed, and seen in the channels."""

import io
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
import zxingcpp
from httpx import ASGITransport, AsyncClient
from PIL import Image, ImageDraw

from app.main import create_app
from tests.database import empty_tables
from tests.factories import (
    BROWSER_UA,
    assert_problem,
    auth,
    make_key,
    make_program,
    make_referrer,
    patch_code,
)
from tests.settings import settings_for_tests

SVG = "{http://www.w3.org/2000/svg}"


def decode_png(body: bytes) -> list[str]:
    image = Image.open(io.BytesIO(body))
    return [result.text for result in zxingcpp.read_barcodes(image)]


def svg_modules(svg: bytes) -> tuple[set[tuple[int, int]], int, float]:
    """The dark modules of a segno SVG (one path of horizontal runs), its width in modules, and
    its pixel width: read from the markup itself, not from segno."""
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert not root.findall(f".//{SVG}script") and "<script" not in svg.decode()
    paths = root.findall(f"{SVG}path")
    assert len(paths) == 1
    scale = float(re.fullmatch(r"scale\(([\d.]+)\)", paths[0].get("transform", "")).group(1))  # type: ignore[union-attr]
    tokens = re.findall(r"[Mmh]|-?\d*\.?\d+", paths[0].get("d", ""))
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    i = 0
    while i < len(tokens):
        command = tokens[i]
        if command in "Mm":
            dx, dy = float(tokens[i + 1]), float(tokens[i + 2])
            x, y = (dx, dy) if command == "M" else (x + dx, y + dy)
            i += 3
        else:
            assert command == "h", command
            length = float(tokens[i + 1])
            dark.update((column, int(y)) for column in range(int(x), int(x + length)))
            x += length
            i += 2
    width = float(root.get("width", "0"))
    return dark, round(width / scale), width


def decode_svg(svg: bytes) -> list[str]:
    dark, modules, _ = svg_modules(svg)
    pixels = 8
    image = Image.new("L", (modules * pixels, modules * pixels), 255)
    draw = ImageDraw.Draw(image)
    for column, row in dark:
        box = (column * pixels, row * pixels, (column + 1) * pixels - 1, (row + 1) * pixels - 1)
        draw.rectangle(box, fill=0)
    return [result.text for result in zxingcpp.read_barcodes(image)]


async def program_with_code(client: AsyncClient, app: Any) -> tuple[str, dict[str, Any], str]:
    admin = await make_key(app)
    program = await make_program(client, admin)
    referrer = await make_referrer(client, admin, program["id"], "alice")
    return admin, program, referrer["default_code"]["code"]


@pytest.mark.parametrize(
    ("placement", "medium"),
    [("packaging", "print"), ("invoice", "print"), ("receipt", "print"), ("email", "email")],
)
async def test_png_and_svg_decode_to_the_link_with_the_placement(
    client: AsyncClient, app: Any, settings: Any, placement: str, medium: str
) -> None:
    _, _, code = await program_with_code(client, app)
    expected = f"{settings.public_base_url}/r/{code}?utm_source={placement}&utm_medium={medium}"
    png = await client.get(f"/v1/codes/{code}/qr.png", params={"placement": placement})
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    assert decode_png(png.content) == [expected]
    svg = await client.get(f"/v1/codes/{code.lower()}/qr.svg", params={"placement": placement})
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert decode_svg(svg.content) == [expected]
    # Both images draw the same matrix.
    image = Image.open(io.BytesIO(png.content))
    assert image.size[0] == image.size[1]


async def test_without_placement_the_qr_code_is_the_plain_link(
    client: AsyncClient, app: Any, settings: Any
) -> None:
    _, _, code = await program_with_code(client, app)
    png = await client.get(f"/v1/codes/{code}/qr.png")
    assert decode_png(png.content) == [f"{settings.public_base_url}/r/{code}"]


async def test_size_sets_the_width_within_bounds(client: AsyncClient, app: Any) -> None:
    _, _, code = await program_with_code(client, app)
    for size in (64, 300, 2048):
        png = await client.get(f"/v1/codes/{code}/qr.png", params={"size": size})
        assert png.status_code == 200
        width = Image.open(io.BytesIO(png.content)).size[0]
        # Whole pixels per module: at most `size`, and less than one module's worth below it.
        modules = svg_modules((await client.get(f"/v1/codes/{code}/qr.svg")).content)[1]
        assert size - modules < width <= size or size < modules
        assert decode_png(png.content)
        svg = await client.get(f"/v1/codes/{code}/qr.svg", params={"size": size})
        assert svg_modules(svg.content)[2] == pytest.approx(size)
    for bad in (0, 63, 2049, "big"):
        response = await client.get(f"/v1/codes/{code}/qr.png", params={"size": bad})
        assert_problem(response, 422, "validation_error")
    response = await client.get(f"/v1/codes/{code}/qr.svg", params={"placement": "billboard"})
    assert_problem(response, 422, "validation_error")


async def test_caching_headers_and_revalidation(client: AsyncClient, app: Any) -> None:
    _, _, code = await program_with_code(client, app)
    first = await client.get(f"/v1/codes/{code}/qr.svg", params={"placement": "invoice"})
    assert first.headers["cache-control"] == "public, max-age=3600"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in first.headers["content-security-policy"]
    etag = first.headers["etag"]
    again = await client.get(
        f"/v1/codes/{code}/qr.svg",
        params={"placement": "invoice"},
        headers={"If-None-Match": etag},
    )
    assert again.status_code == 304 and again.content == b""
    other = await client.get(
        f"/v1/codes/{code}/qr.svg", params={"placement": "email"}, headers={"If-None-Match": etag}
    )
    assert other.status_code == 200 and other.headers["etag"] != etag


async def test_unknown_disabled_or_paused_codes_have_no_qr_code(
    client: AsyncClient, app: Any
) -> None:
    admin, program, code = await program_with_code(client, app)
    assert_problem(await client.get("/v1/codes/NOSUCHCODE/qr.png"), 404, "code_not_found")
    await patch_code(client, admin, code, disabled=True)
    problem = assert_problem(await client.get(f"/v1/codes/{code}/qr.svg"), 404, "code_unavailable")
    assert "disabled" in problem["detail"]
    await patch_code(client, admin, code, disabled=False)
    assert (await client.get(f"/v1/codes/{code}/qr.svg")).status_code == 200
    paused = await client.patch(
        f"/v1/programs/{program['id']}", json={"status": "paused"}, headers=auth(admin)
    )
    assert paused.status_code == 200
    problem = assert_problem(await client.get(f"/v1/codes/{code}/qr.png"), 404, "code_unavailable")
    assert "program not active" in problem["detail"]


async def test_a_scan_is_a_click_of_the_placements_channel(client: AsyncClient, app: Any) -> None:
    """Decode the packaging QR code, follow it like a phone would, read the channels report."""
    admin, program, code = await program_with_code(client, app)
    for placement, scans in (("packaging", 2), ("invoice", 1)):
        png = await client.get(f"/v1/codes/{code}/qr.png", params={"placement": placement})
        (link,) = decode_png(png.content)
        parts = urlsplit(link)
        for n in range(scans):
            followed = await client.get(
                f"{parts.path}?{parts.query}",
                headers={"User-Agent": BROWSER_UA, "X-Forwarded-For": f"198.51.100.{n}"},
            )
            assert followed.status_code == 302, followed.text
            landing = parse_qs(urlsplit(followed.headers["location"]).query)
            assert landing["ref"] == [code]
    channels = await client.get(
        f"/v1/programs/{program['id']}/metrics/channels", headers=auth(admin)
    )
    assert channels.status_code == 200, channels.text
    rows = {(r["utm_source"], r["utm_medium"]): r for r in channels.json()["data"]}
    assert rows[("packaging", "print")]["clicks"] == 2
    assert rows[("invoice", "print")]["clicks"] == 1


async def test_qr_codes_need_no_key_and_are_rate_limited() -> None:
    settings = settings_for_tests(
        rate_limits_enabled=True,
        rate_limit_public_per_ip="3/minute",
        rate_limit_code_lookup_per_ip="2/minute",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await empty_tables(application)
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            _, _, code = await program_with_code(http, application)
            answers = [(await http.get(f"/v1/codes/{code}/qr.png")).status_code for _ in range(4)]
            assert answers == [200, 200, 200, 429]
            # Unknown codes also count against the lookup limit (guessing is throttled).
            unknown = [
                (await http.get(f"/v1/codes/UNKNOWN{n}/qr.svg")).status_code for n in range(3)
            ]
            assert unknown == [404, 404, 429]
