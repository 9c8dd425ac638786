"""The storefront snippet as served: headers, size, hygiene, the README's SRI hash, and the code
lookup answer it learns the program's attribution from. Its behaviour in a browser is in
tests/test_storefront_browser.py."""

import base64
import gzip
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient

from app.storefront.router import SCRIPT_PATH, STATIC, compact, snippet
from tests.factories import auth, make_key, make_program, make_referrer

README = Path(__file__).resolve().parent.parent / "README.md"
SHOP = "https://shop.example.com"
IMMUTABLE = "public, max-age=31536000, immutable"


async def test_the_script_is_cacheable_for_a_year_and_readable_by_any_origin(
    client: AsyncClient,
) -> None:
    response = await client.get(SCRIPT_PATH, headers={"Origin": SHOP})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-encoding"] == "gzip"  # httpx asks for it, and decodes
    assert re.fullmatch(r'"[0-9a-f]{32}-gzip"', response.headers["etag"])
    assert response.content == snippet().body

    plain = await client.get(SCRIPT_PATH, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == response.content
    assert plain.headers["etag"] == response.headers["etag"].replace("-gzip", "")
    refused = await client.get(SCRIPT_PATH, headers={"Accept-Encoding": "gzip;q=0, br"})
    assert "content-encoding" not in refused.headers


async def test_a_cached_copy_is_revalidated_with_its_etag(client: AsyncClient) -> None:
    first = await client.get(SCRIPT_PATH, headers={"Accept-Encoding": "identity"})
    etag = first.headers["etag"]
    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(
            SCRIPT_PATH, headers={"If-None-Match": given, "Accept-Encoding": "identity"}
        )
        assert again.status_code == 304, given
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == IMMUTABLE
    changed = await client.get(
        SCRIPT_PATH, headers={"If-None-Match": '"0123"', "Accept-Encoding": "identity"}
    )
    assert changed.status_code == 200 and changed.content == first.content


async def test_it_is_small(client: AsyncClient) -> None:
    served = (await client.get(SCRIPT_PATH)).content
    assert len(gzip.compress(served, compresslevel=9)) < 3 * 1024
    wire = await client.get(SCRIPT_PATH, headers={"Accept-Encoding": "gzip"})
    assert int(wire.headers["content-length"]) < 3 * 1024


def test_the_readme_pins_the_served_bytes() -> None:
    text = README.read_text()
    section = text[text.index("\n## Put it on your storefront\n") :]
    tag = re.search(r"<script src=\"(?P<src>[^\"]+)\"(?P<rest>[^>]*)>", section)
    assert tag is not None, "the README's storefront section starts with the script tag"
    assert tag["src"].endswith(SCRIPT_PATH)
    integrity = re.search(r'integrity="(sha384-[A-Za-z0-9+/=]+)"', tag["rest"])
    assert integrity is not None
    served = snippet().body
    expected = "sha384-" + base64.b64encode(hashlib.sha384(served).digest()).decode()
    assert integrity[1] == expected, (
        "update the hash in README.md (a changed script needs a new path)"
    )
    assert 'crossorigin="anonymous"' in tag["rest"]


def test_the_source_needs_no_unsafe_feature() -> None:
    source = (STATIC / "referrals.js").read_text()
    for unsafe in (
        "eval(",
        "Function(",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "import(",
        "setTimeout(",
        "setInterval(",
    ):
        assert unsafe not in source, unsafe
    # No host but the service (the script's own origin) and Stripe's Payment Links.
    hosts = set(re.findall(r"https?://([\w.-]+)", source))
    assert hosts == {"buy.stripe.com"}, hosts
    # compact() keeps every line break; it is only safe with no string spanning lines.
    for number, line in enumerate(source.splitlines(), 1):
        assert line.count("`") % 2 == 0, f"a template literal spans line {number}"


def test_compacting_drops_comments_and_indentation_only() -> None:
    source = "(() => {\n  // why\n  const a = 'https://x/';  // kept\n\n    f(a);\n})();\n"
    assert compact(source) == "(() => {\nconst a = 'https://x/';  // kept\nf(a);\n})();\n"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_served_script_parses(tmp_path: Path) -> None:
    script = tmp_path / "referrals.js"
    script.write_bytes(snippet().body)
    result = subprocess.run(
        ["node", "--check", str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


async def test_the_script_is_not_an_api_operation(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not any(path.startswith("/js/") for path in paths)


async def _widget(client: AsyncClient, app: Any, **program: Any) -> tuple[str, str, str]:
    admin = await make_key(app)
    created = await make_program(client, admin, allowed_origins=[SHOP], **program)
    code = (await make_referrer(client, admin, created["id"]))["default_code"]["code"]
    publishable = await make_key(app, "publishable", [UUID(created["id"])])
    return admin, publishable, code


async def test_the_code_lookup_gives_the_programs_attribution(
    client: AsyncClient, app: Any
) -> None:
    _, publishable, code = await _widget(
        client, app, attribution_model="first_touch", attribution_window_days=45
    )
    response = await client.get(f"/v1/codes/{code}", headers=auth(publishable) | {"Origin": SHOP})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["attribution_model"], body["attribution_window_days"]) == ("first_touch", 45)
    assert response.headers["access-control-allow-origin"] == SHOP


async def test_the_snippets_calls_pass_the_preflight(client: AsyncClient, app: Any) -> None:
    """What the snippet sends: Authorization on both calls, a JSON Content-Type on the click."""
    _, _, code = await _widget(client, app)
    for method, path, headers in (
        ("POST", "/v1/clicks", "authorization, content-type"),
        ("GET", f"/v1/codes/{code}", "authorization"),
    ):
        preflight = await client.options(
            path,
            headers={
                "Origin": SHOP,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": headers,
            },
        )
        assert preflight.status_code == 204, path
        assert preflight.headers["access-control-allow-origin"] == SHOP
        allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
        assert set(headers.split(", ")) <= allowed
        assert method in preflight.headers["access-control-allow-methods"]
