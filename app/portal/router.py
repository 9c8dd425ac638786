"""`GET /portal`: the hosted referrer portal, and its assets from this package.

The page is public HTML with no data in it, like /dashboard and under the same
Content-Security-Policy. A magic link (`POST /v1/referrers/{id}/portal-links`) opens it as
`/portal#token=rk_ref_…`: the fragment never reaches a server, and the page moves the token to
the tab's sessionStorage and out of the address bar before it calls `/v1/me…` with it (same
origin). The link, sharing, progress and rewards are the share widget's `<referral-share>`,
served from `/js/v2/widget.js`; the page adds the friends, the leaderboard and the name form.
"""

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Response

from app.core.errors import NotFound
from app.dashboard.router import CONTENT_SECURITY_POLICY, PAGE_HEADERS
from app.referrer_sessions.service import PORTAL_PATH
from app.storefront.router import WIDGET_PATH, widget

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
ASSET_NAMES = ("portal.js", "portal.css", "favicon.svg")
ASSETS_PATH = PORTAL_PATH + "/assets"
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


@cache
def page() -> bytes:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    for name, asset in assets().items():
        html = html.replace("{{" + name + "}}", f"{ASSETS_PATH}/{name}?v={asset.version}")
    html = html.replace("{{widget.js}}", WIDGET_PATH)
    html = html.replace("{{widget.js:integrity}}", widget().integrity)
    return html.encode()


@router.get(PORTAL_PATH)
async def portal() -> Response:
    """The portal page: markup only; the data comes from /v1/me…, with the link's token."""
    return Response(page(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get(ASSETS_PATH + "/{name}")
async def portal_asset(name: str, v: str | None = None) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"No portal asset {name!r}.")
    return Response(
        asset.body,
        media_type=asset.media_type,
        headers={
            "Cache-Control": IMMUTABLE if v == asset.version else "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        },
    )
