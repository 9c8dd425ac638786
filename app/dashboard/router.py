"""`GET /dashboard`: the ops page, and its assets from this package.

The page is public HTML with no data in it. The browser asks for an API key, keeps it in the
tab's sessionStorage only, and reads the JSON API with it (`Authorization` header, same
origin). Charts are SVG drawn by the page's own script: nothing is loaded from elsewhere, and
the Content-Security-Policy says so.
"""

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Response

from app.core.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",  # the key form is never submitted anywhere
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The scripts, in the order the page loads them (see static/index.html).
SCRIPTS = ("dom.js", "format.js", "charts.js", "panels.js", "dashboard.js")
ASSET_NAMES = (*SCRIPTS, "dashboard.css", "favicon.svg")
# An asset asked for with its current version never changes; any other URL revalidates.
IMMUTABLE = "public, max-age=31536000, immutable"

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str


@cache
def assets() -> dict[str, Asset]:
    found = {}
    for name in ASSET_NAMES:
        body = (STATIC / name).read_bytes()
        version = hashlib.sha256(body).hexdigest()[:12]
        found[name] = Asset(body, MEDIA_TYPES[Path(name).suffix], version)
    return found


def asset_url(name: str) -> str:
    return f"/dashboard/assets/{name}?v={assets()[name].version}"


@cache
def page() -> bytes:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    for name in ASSET_NAMES:
        html = html.replace("{{" + name + "}}", asset_url(name))
    return html.encode()


@router.get("/dashboard")
async def dashboard() -> Response:
    """The dashboard page: markup only; the data comes from the API, with the user's key."""
    return Response(page(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/dashboard/assets/{name}")
async def dashboard_asset(name: str, v: str | None = None) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"No dashboard asset {name!r}.")
    return Response(
        asset.body,
        media_type=asset.media_type,
        headers={
            "Cache-Control": IMMUTABLE if v == asset.version else "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        },
    )
