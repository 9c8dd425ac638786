from html import escape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.core.errors import COMMON_ERRORS, POST_ERRORS, problem_responses
from app.http.auth import AUTHENTICATED_ERRORS
from app.http.cors import OriginNotAllowed, WidgetKey
from app.http.dependencies import SessionDep
from app.http.ratelimit import PublicRateLimit, RateLimited, client_ip, limit_code_lookup
from app.programs.service import ProgramNotActive
from app.programs.tokens import CustomerTokenExpired, CustomerTokenInvalid
from app.referrers.service import CodeNotFound
from app.tracking import service
from app.tracking.click_writer import ClickWriter
from app.tracking.schemas import ClickCreate, ClickOut, RedemptionCreate, RedemptionOut

router = APIRouter(tags=["tracking"])

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign")


def visit_of(request: Request) -> service.Visit:
    return service.Visit(ip=client_ip(request), user_agent=request.headers.get("user-agent"))


@router.post(
    "/v1/clicks",
    status_code=201,
    response_model=ClickOut,
    responses=problem_responses(
        *AUTHENTICATED_ERRORS,
        *POST_ERRORS,
        CodeNotFound,
        ProgramNotActive,
        OriginNotAllowed,
    ),
)
async def record_click(
    body: ClickCreate,
    request: Request,
    session: SessionDep,
    principal: WidgetKey,
    _rate: PublicRateLimit,
) -> ClickOut:
    settings = request.app.state.settings
    return await service.record_click(
        session,
        settings,
        principal,
        body,
        visit_of(request),
        click_writer(request),
        request.app.state.code_cache,
    )


@router.post(
    "/v1/redemptions",
    status_code=201,
    response_model=RedemptionOut,
    responses=problem_responses(
        *AUTHENTICATED_ERRORS,
        *POST_ERRORS,
        CodeNotFound,
        ProgramNotActive,
        service.CodeDisabled,
        service.CodeExpired,
        service.CodeExhausted,
        service.SelfReferral,
        service.AlreadyReferred,
        service.ClickNotFound,
        service.RedemptionProofRequired,
        service.ClickCodeMismatch,
        service.ClickAlreadyUsed,
        CustomerTokenInvalid,
        CustomerTokenExpired,
        OriginNotAllowed,
    ),
)
async def redeem(
    body: RedemptionCreate, session: SessionDep, principal: WidgetKey, _rate: PublicRateLimit
) -> RedemptionOut:
    """A new customer redeems a code. A program with `redemption_proof` wants a widget's
    redemption to carry a click on the code or a customer token; a secret key is trusted."""
    return await service.redeem(session, principal, body)


@router.get(
    "/r/{code}",
    status_code=302,
    response_class=RedirectResponse,
    responses=problem_responses(RateLimited, *COMMON_ERRORS)
    | {404: {"description": "Unknown code (a small HTML page)", "content": {"text/html": {}}}},
)
async def follow_link(
    code: str, request: Request, session: SessionDep, _rate: PublicRateLimit
) -> Response:
    """Record the click and send the shopper to the program's landing page."""
    settings = request.app.state.settings
    query = request.query_params
    details = service.ClickDetails(
        referring_url=request.headers.get("referer"),
        **{field: value[:200] for field in UTM_FIELDS if (value := _text(query.get(field)))},
    )
    try:
        click, found, program = await service.follow_link(
            session,
            settings,
            code,
            details,
            visit_of(request),
            click_writer(request),
            request.app.state.code_cache,
        )
    except CodeNotFound:
        # Unknown codes count against the lookup limit: guessing codes gets throttled.
        await limit_code_lookup(request)
        return _unknown_code_page(code)
    if click is None:
        return RedirectResponse(program.landing_url, status_code=302)
    params = {"click_id": str(click.click_id)}
    if click.attributable:
        params["ref"] = found.code
    return RedirectResponse(with_query(program.landing_url, params), status_code=302)


@router.head(
    "/r/{code}",
    status_code=302,
    response_class=RedirectResponse,
    responses=problem_responses(RateLimited, *COMMON_ERRORS)
    | {404: {"description": "Unknown code", "content": {"text/html": {}}}},
)
async def check_link(
    code: str, request: Request, session: SessionDep, _rate: PublicRateLimit
) -> Response:
    """Answer as GET does, for link checkers and previews, without recording a click.

    The Location is the same landing page with the same `ref`; it has no `click_id`, since no
    click was recorded (so none is counted, unique or not).
    """
    try:
        found, program, attributable = await service.peek_link(
            session, code, request.app.state.code_cache
        )
    except CodeNotFound:
        await limit_code_lookup(request)
        return _unknown_code_page(code)
    if program.status != "active":
        return RedirectResponse(program.landing_url, status_code=302)
    params = {"ref": found.code} if attributable else {}
    return RedirectResponse(with_query(program.landing_url, params), status_code=302)


def _text(value: str | None) -> str | None:
    """A query value without NUL characters (which Postgres cannot store), or None if empty."""
    cleaned = (value or "").replace("\x00", "")
    return cleaned or None


def click_writer(request: Request) -> ClickWriter | None:
    """The group-commit writer; not for requests with an Idempotency-Key (see _store_click)."""
    if "idempotency-key" in request.headers:
        return None
    writer: ClickWriter = request.app.state.click_writer
    return writer


def with_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` added to its query, keeping the parameters it already has."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _unknown_code_page(code: str) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
        "<body style='font-family:system-ui;max-width:32rem;margin:4rem auto'>"
        "<h1>This referral link does not exist</h1>"
        f"<p>The code <code>{escape(code[:64])}</code> is not known. "
        "Check the link you were given.</p></body></html>"
    )
    return HTMLResponse(body, status_code=404)
