"""`GET /v1/codes/{code}/qr.svg|png`: public, like the link the image encodes."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from app.core.errors import COMMON_ERRORS, problem_responses
from app.http.dependencies import SessionDep
from app.http.ratelimit import PublicRateLimit, RateLimited, limit_code_lookup
from app.qr import service
from app.qr.service import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, ImageFormat, Placement
from app.referrers.service import CodeNotFound

router = APIRouter(tags=["codes"])

# An image changes only when the code stops being usable; a day of caching is harmless for
# print, and an hour keeps a disabled code from being served for long.
CACHE_CONTROL = "public, max-age=3600"
# An SVG opened on its own is a document: it may run nothing and load nothing.
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"

SizeQuery = Annotated[
    int,
    Query(
        ge=MIN_SIZE,
        le=MAX_SIZE,
        description="Width in pixels (at most; a PNG has a whole number of pixels per module).",
    ),
]
PlacementQuery = Annotated[
    Placement | None,
    Query(description="Where it is printed or shown: the link's utm_source, for the channels."),
]
CodePath = Annotated[str, Path(min_length=1, max_length=64)]


def _image_responses(media_type: str) -> dict[int | str, dict[str, object]]:
    return problem_responses(CodeNotFound, service.CodeUnavailable, RateLimited, *COMMON_ERRORS) | {
        200: {"content": {media_type: {}}, "description": "The QR code"},
        304: {"description": "Not modified (If-None-Match)"},
    }


async def _answer(
    request: Request,
    session: SessionDep,
    code: str,
    image_format: ImageFormat,
    size: int,
    placement: str | None,
) -> Response:
    try:
        image = await service.code_qr(
            session,
            request.app.state.settings,
            code,
            image_format,
            size,
            placement,
            request.app.state.code_cache,
        )
    except CodeNotFound:
        # Unknown codes count against the lookup limit, as on /r/{code}: guessing is throttled.
        await limit_code_lookup(request)
        raise
    headers = {
        "Cache-Control": CACHE_CONTROL,
        "ETag": image.etag,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if image_format == "svg":
        headers["Content-Security-Policy"] = SVG_POLICY
    if image.etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(image.body, media_type=image.media_type, headers=headers)


@router.get(
    "/v1/codes/{code}/qr.svg",
    response_class=Response,
    responses=_image_responses("image/svg+xml"),
)
async def code_qr_svg(
    code: CodePath,
    request: Request,
    session: SessionDep,
    _rate: PublicRateLimit,
    size: SizeQuery = DEFAULT_SIZE,
    placement: PlacementQuery = None,
) -> Response:
    """The code's link as a QR code (SVG); no key needed, like the link itself."""
    return await _answer(request, session, code, "svg", size, placement)


@router.get(
    "/v1/codes/{code}/qr.png",
    response_class=Response,
    responses=_image_responses("image/png"),
)
async def code_qr_png(
    code: CodePath,
    request: Request,
    session: SessionDep,
    _rate: PublicRateLimit,
    size: SizeQuery = DEFAULT_SIZE,
    placement: PlacementQuery = None,
) -> Response:
    """The code's link as a QR code (PNG); no key needed, like the link itself."""
    return await _answer(request, session, code, "png", size, placement)
