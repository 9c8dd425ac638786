"""`GET /js/v1/referrals.js` and `GET /js/v2/widget.js`: the storefront snippet and the share
widget (`<referral-share>`, `<referral-redeem>`), served from this package. `/js/v1/widget.js`
(the widget before it showed the QR code, static/widget-v1.js) is still served, unchanged, for
the pages that pinned its hash.

Shops load them cross-origin with Subresource Integrity, so the answer is readable by any origin
(`Access-Control-Allow-Origin: *`; they carry no data) and their bytes never change under these
paths: a changed script is served under a new version path, never as a new `/js/v1/` file that
pages pinning the old hash would refuse. Whole-line comments and indentation are dropped when
a file is read (the file stays readable, the wire stays small); the SRI hashes in the README
are those of the served bytes.
"""

import base64
import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response

STATIC = Path(__file__).resolve().parent / "static"
SCRIPT_PATH = "/js/v1/referrals.js"
WIDGET_PATH = "/js/v2/widget.js"
WIDGET_V1_PATH = "/js/v1/widget.js"
IMMUTABLE = "public, max-age=31536000, immutable"

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Script:
    body: bytes
    gzipped: bytes
    etag: str
    integrity: str  # the value for the <script integrity="…"> attribute


def compact(source: str) -> str:
    """The script without whole-line comments, blank lines and indentation.

    Safe because the source has no string spanning lines (tests/test_storefront_script.py checks
    it): no line break is removed, so automatic semicolon insertion reads it the same way.
    """
    lines = (line.strip() for line in source.splitlines())
    return "".join(line + "\n" for line in lines if line and not line.startswith("//"))


@cache
def served(name: str) -> Script:
    """A script of static/ as it is served: compacted, with its gzip, ETag and SRI value."""
    body = compact((STATIC / name).read_text(encoding="utf-8")).encode()
    digest = hashlib.sha384(body).digest()
    return Script(
        body=body,
        # mtime=0: the same bytes on every replica, so one ETag per encoding everywhere.
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        integrity="sha384-" + base64.b64encode(digest).decode(),
    )


def snippet() -> Script:
    return served("referrals.js")


def widget() -> Script:
    return served("widget.js")


def widget_v1() -> Script:
    """The first widget, frozen: its bytes (and SRI hash) never change."""
    return served("widget-v1.js")


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _accepts_gzip(accept_encoding: str | None) -> bool:
    for item in (accept_encoding or "").split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() == "gzip":
            weights = [param[2:] for param in params if param.startswith("q=")]
            try:
                return not weights or float(weights[0]) > 0
            except ValueError:
                return False
    return False


@router.get(SCRIPT_PATH)
async def referrals_script(request: Request) -> Response:
    """The snippet: cacheable for a year by anyone, gzipped when the client takes it."""
    return _script_response(request, snippet())


@router.get(WIDGET_PATH)
async def widget_script(request: Request) -> Response:
    """The share widget's custom elements, served like the snippet."""
    return _script_response(request, widget())


@router.get(WIDGET_V1_PATH)
async def widget_v1_script(request: Request) -> Response:
    """The first share widget, as it was: served for the pages that pinned its hash."""
    return _script_response(request, widget_v1())


def _script_response(request: Request, script: Script) -> Response:
    gzipped = _accepts_gzip(request.headers.get("accept-encoding"))
    # One representation per encoding, each with its own strong validator.
    etag = script.etag[:-1] + '-gzip"' if gzipped else script.etag
    headers = {
        "Cache-Control": IMMUTABLE,
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(
        script.gzipped if gzipped else script.body,
        media_type="text/javascript; charset=utf-8",
        headers=headers,
    )
