"""The share widget's script and the portal page as served: headers, size, hygiene, the README's
SRI hash, and the origin rule that lets the portal (the service's own page) change /v1/me.
Their behaviour in a browser is in tests/test_widget_browser.py and tests/test_portal_browser.py.
"""

import base64
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient

from app.dashboard.router import CONTENT_SECURITY_POLICY
from app.portal.router import STATIC as PORTAL_STATIC
from app.portal.router import assets
from app.storefront.router import STATIC, WIDGET_PATH, WIDGET_V1_PATH, widget, widget_v1
from tests.factories import assert_problem, auth
from tests.session_factories import referrer_with_session

ROOT = Path(__file__).resolve().parent.parent
IMMUTABLE = "public, max-age=31536000, immutable"
SHOP = "https://shop.example.com"
UNSAFE = (
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "document.write",
    "eval(",
    "Function(",
    "import(",
    "setTimeout(",
    "setInterval(",
)


async def test_the_widget_is_served_like_the_snippet(client: AsyncClient) -> None:
    response = await client.get(WIDGET_PATH, headers={"Origin": SHOP})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["access-control-allow-origin"] == "*"  # SRI needs a CORS read
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == widget().body
    etag = response.headers["etag"]
    again = await client.get(WIDGET_PATH, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    plain = await client.get(WIDGET_PATH, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == widget().body


# The hash of /js/v1/widget.js that shops pinned (the README's until v2): it never changes.
V1_INTEGRITY = "sha384-jCURooMqWe4IRJl4mLJiLsCRwt4cXwBgRF4iMwb3xQxtgIbyExoqDvuU95Vgzoys"


async def test_the_first_widget_is_still_served_byte_for_byte(client: AsyncClient) -> None:
    response = await client.get(WIDGET_V1_PATH, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.content == widget_v1().body
    digest = "sha384-" + base64.b64encode(hashlib.sha384(response.content).digest()).decode()
    assert digest == widget_v1().integrity == V1_INTEGRITY
    assert widget().body != widget_v1().body and WIDGET_PATH != WIDGET_V1_PATH


async def test_the_widget_is_small(client: AsyncClient) -> None:
    wire = await client.get(WIDGET_PATH, headers={"Accept-Encoding": "gzip"})
    assert int(wire.headers["content-length"]) < 8 * 1024
    assert len(gzip.compress(widget().body, compresslevel=9)) < 8 * 1024


def test_the_readme_pins_the_served_widget() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n### Share widget\n") :]
    tag = re.search(r"<script src=\"(?P<src>[^\"]+)\"(?P<rest>[^>]*)>", section)
    assert tag is not None, "the README's Share widget section starts with the script tag"
    assert tag["src"].endswith(WIDGET_PATH)
    integrity = re.search(r'integrity="(sha384-[A-Za-z0-9+/=]+)"', tag["rest"])
    assert integrity is not None
    expected = "sha384-" + base64.b64encode(hashlib.sha384(widget().body).digest()).decode()
    assert integrity[1] == expected == widget().integrity, (
        "update the hash in README.md (a changed widget needs a new path)"
    )
    assert 'crossorigin="anonymous"' in tag["rest"]


@pytest.mark.parametrize("source", [STATIC / "widget.js", PORTAL_STATIC / "portal.js"])
def test_the_scripts_never_parse_data_as_markup(source: Path) -> None:
    text = source.read_text()
    for unsafe in UNSAFE:
        assert unsafe not in text, f"{source.name} uses {unsafe}"
    assert set(re.findall(r"https?://([\w.-]+)", text)) == set(), "no host but the service"
    for number, line in enumerate(text.splitlines(), 1):
        assert line.count("`") % 2 == 0, f"a template literal spans line {number}"


def test_the_files_stay_small() -> None:
    for directory in (STATIC, PORTAL_STATIC):
        for path in directory.iterdir():
            assert len(path.read_text().splitlines()) < 600, path.name


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_served_widget_parses(tmp_path: Path) -> None:
    script = tmp_path / "widget.js"
    script.write_bytes(widget().body)
    result = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_static_files_ship_in_the_package(tmp_path: Path) -> None:
    """The wheel (what the Dockerfile installs) holds every page's and email's files."""
    uv = (
        os.environ.get("UV")
        or shutil.which("uv")
        or next((str(p) for p in Path.home().glob(".cache/referral-service/uv-*/bin/uv")), None)
    )
    assert uv, "uv is missing: `make dev` installs it"
    subprocess.run([uv, "build", "--wheel", "-q", "-o", str(tmp_path), str(ROOT)], check=True)
    [wheel] = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("dashboard/static", "portal/static", "storefront/static", "emails/templates"):
        files = [p for p in (ROOT / "app" / folder).iterdir() if p.is_file()]
        assert files, folder
        missing = [p.name for p in files if f"app/{folder}/{p.name}" not in shipped]
        assert not missing, (folder, missing)


async def test_the_portal_page_holds_no_data_and_a_strict_policy(client: AsyncClient) -> None:
    page = await client.get("/portal")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-cache"
    html = page.text
    assert "{{" not in html
    assert f'src="{WIDGET_PATH}" integrity="{widget().integrity}"' in html
    for name, asset in assets().items():
        url = f"/portal/assets/{name}?v={asset.version}"
        assert url in html, name
        served = await client.get(url)
        assert served.status_code == 200 and served.content == asset.body
        assert served.headers["cache-control"] == IMMUTABLE
        stale = await client.get(f"/portal/assets/{name}?v=old")
        assert stale.headers["cache-control"] == "no-cache"
    assert_problem(await client.get("/portal/assets/secrets.txt"), 404, "not_found")


async def test_neither_is_an_api_operation(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not any(path.startswith(("/js/", "/portal")) for path in paths)


async def test_the_portal_may_change_me_from_the_services_own_origin(
    client: AsyncClient, app: Any
) -> None:
    """A browser sends its Origin on a same-origin PATCH or DELETE: the service's own origin is
    allowed, another (even the same host on another port) is refused like any shop not listed."""
    w = await referrer_with_session(client, app, allowed_origins=[SHOP])
    body = {"leaderboard_name": "Alice L."}
    own = {"Origin": "http://testserver"} | auth(w["token"])
    answer = await client.patch("/v1/me", json=body, headers=own)
    assert answer.status_code == 200, answer.text
    assert "access-control-allow-origin" not in answer.headers  # same origin: no CORS needed
    shop = await client.patch("/v1/me", json=body, headers=auth(w["token"]) | {"Origin": SHOP})
    assert shop.status_code == 200
    for foreign in ("https://evil.example", "http://testserver:8080", "https://testserver"):
        refused = await client.patch(
            "/v1/me", json=body, headers=auth(w["token"]) | {"Origin": foreign}
        )
        assert_problem(refused, 403, "origin_not_allowed")
    ended = await client.delete("/v1/me/session", headers=own)
    assert ended.status_code == 204
