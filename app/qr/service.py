"""QR codes of referral links, for packaging, invoices, receipts and emails.

A QR code encodes the code's public link, `/r/{code}`, with the placement as its channel
(`utm_source=<placement>`, `utm_medium=print` or `email`): the click it brings is stored with
those fields, so the channels report shows which placement brings referrals. Drawn by segno.
"""

import hashlib
import io
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import quote, urlencode

import segno
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import AppError
from app.referrers.codes import code_state
from app.referrers.service import CodeCache, find_code

Placement = Literal["packaging", "invoice", "receipt", "email"]
PLACEMENTS: tuple[str, ...] = get_args(Placement)
MEDIUM: dict[str, str] = {
    "packaging": "print",
    "invoice": "print",
    "receipt": "print",
    "email": "email",
}
ImageFormat = Literal["svg", "png"]
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 64, 2048, 300
# The quiet zone the QR specification asks for, in modules.
BORDER = 4


class CodeUnavailable(AppError):
    status, code, title = 404, "code_unavailable", "The code cannot be used now"


@dataclass(frozen=True)
class QrImage:
    body: bytes
    media_type: str
    etag: str
    link: str


def placement_link(settings: Settings, code: str, placement: str | None) -> str:
    """The link a QR code of `code` encodes: `/r/{code}`, tagged with the placement if any."""
    link = f"{settings.public_base_url.rstrip('/')}/r/{quote(code, safe='')}"
    if placement is None:
        return link
    return link + "?" + urlencode({"utm_source": placement, "utm_medium": MEDIUM[placement]})


def qr_url(settings: Settings, code: str, placement: str, size: int = 240) -> str:
    """Where the PNG of `code`'s QR code for `placement` is served (emails embed it)."""
    base = settings.public_base_url.rstrip("/")
    query = urlencode({"placement": placement, "size": size})
    return f"{base}/v1/codes/{quote(code, safe='')}/qr.png?{query}"


async def code_qr(
    session: AsyncSession,
    settings: Settings,
    text: str,
    image_format: ImageFormat,
    size: int,
    placement: str | None,
    cache: CodeCache | None = None,
) -> QrImage:
    """The QR image of a code that can be used now (CodeNotFound, else CodeUnavailable)."""
    code, program = await find_code(session, None, text, cache=cache)
    state = code_state(code, program, utcnow())
    if state != "valid":
        raise CodeUnavailable(f"The code {code.code!r} is {state.replace('_', ' ')}.")
    link = placement_link(settings, code.code, placement)
    body = render(link, image_format, size)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    media_type = "image/svg+xml" if image_format == "svg" else "image/png"
    return QrImage(body=body, media_type=media_type, etag=etag, link=link)


def render(link: str, image_format: ImageFormat, size: int) -> bytes:
    """The QR code of `link` at most `size` pixels wide (PNG: whole pixels per module)."""
    qr = segno.make_qr(link, error="m")
    modules = qr.symbol_size(scale=1, border=BORDER)[0]
    out = io.BytesIO()
    if image_format == "svg":
        # A vector scales exactly; the title names the link for screen readers.
        qr.save(out, kind="svg", scale=size / modules, border=BORDER, xmldecl=False, title=link)
    else:
        qr.save(out, kind="png", scale=max(1, size // modules), border=BORDER)
    return out.getvalue()
