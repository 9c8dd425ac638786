from html import escape
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.core.access import KeyKind, may_see
from app.core.errors import COMMON_ERRORS, POST_ERRORS, problem_responses
from app.http.auth import AUTHENTICATED_ERRORS, cached_principal, load_principal
from app.http.cors import OriginNotAllowed, WidgetKey, cached_origin_allowed, load_key_origins
from app.http.dependencies import SessionDep
from app.http.lean import Answer, LeanRequest, LeanRoute, SingleFlight, Work, parse_json, quietly
from app.http.ratelimit import PublicRateLimit, RateLimited, client_ip, limit_code_lookup
from app.programs.models import ProgramStatus
from app.programs.service import ProgramNotActive
from app.programs.tokens import CustomerTokenExpired, CustomerTokenInvalid
from app.referrers.codes import normalize
from app.referrers.service import CodeNotFound, cached_code, load_code
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
    details = _link_details(request.query_params, request.headers.get("referer"))
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
    return RedirectResponse(_landing(program.landing_url, click, found.code), status_code=302)


def _link_details(query: Any, referer: str | None) -> service.ClickDetails:
    """What a link's click records of the visit: its UTM parameters and the referring page."""
    return service.ClickDetails(
        referring_url=referer,
        **{field: value[:200] for field in UTM_FIELDS if (value := _text(query.get(field)))},
    )


def _landing(landing_url: str, click: ClickOut, code: str) -> str:
    params = {"click_id": str(click.click_id)}
    if click.attributable:
        params["ref"] = code
    return with_query(landing_url, params)


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


# --- the lean path (app.http.lean): the same two answers, from the caches, before FastAPI ---

CLICK_KEY_KINDS = frozenset({KeyKind.ADMIN, KeyKind.SECRET, KeyKind.PUBLISHABLE})  # as AnyKey
# Starlette's RedirectResponse quotes the Location so; the lean answer must read the same.
LOCATION_SAFE = ":/%#?=@[]!$&'()*+,;"


class _LeanClick:
    """POST /v1/clicks for a live key, a valid JSON body and a code of an active program."""

    method, template, takes_body = "POST", "/v1/clicks", True

    def __init__(self, state: Any) -> None:
        self.state = state
        self.flights = SingleFlight()

    def match(self, path: str) -> str | None:
        return "" if path == self.template else None

    async def prepare(self, request: LeanRequest) -> Work | None:
        state, headers = self.state, request.headers
        keys, codes, origins = state.principal_cache, state.code_cache, state.key_origins
        if keys is None or codes is None or origins is None:
            return None
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        data = parse_json(request.body) if media_type == "application/json" else None
        if not isinstance(data, dict):
            return None
        try:
            body = ClickCreate.model_validate(data)
        except ValidationError:
            return None
        authorization = headers.get("authorization", "")
        principal = cached_principal(keys, authorization) or await quietly(
            self.flights.run(
                ("key", authorization),
                lambda: load_principal(state.sessionmaker, keys, authorization),
            )
        )
        if principal is None or principal.kind not in CLICK_KEY_KINDS:
            return None
        origin = headers.get("origin")
        allowed = cached_origin_allowed(origins, principal, origin)
        if allowed is None:
            loaded = await quietly(
                self.flights.run(
                    ("origins", principal.key_id),
                    lambda: load_key_origins(state.sessionmaker, origins, principal),
                )
            )
            allowed = loaded is not None and origin in loaded
        if not allowed:
            return None
        found = cached_code(codes, principal, body.code) or await _load_code(
            self.flights, state, body.code
        )
        if found is None or found[1].status != ProgramStatus.ACTIVE:
            return None
        code, program = found
        if not may_see(principal, program.id, code.referrer_id):
            return None
        request.key_id = principal.key_id
        visit = service.Visit(ip=request.client_ip, user_agent=headers.get("user-agent"))

        async def work() -> Answer:
            click = await service.record_cached_click(
                state.settings, code, program, body, visit, state.click_writer
            )
            return Answer.json(201, click.model_dump_json().encode())

        return work


class _LeanLink:
    """GET /r/{code} for a code of an active program."""

    method, template, takes_body = "GET", "/r/{code}", False

    def __init__(self, state: Any) -> None:
        self.state = state
        self.flights = SingleFlight()

    def match(self, path: str) -> str | None:
        code = path[3:] if path.startswith("/r/") else ""
        return code if code and "/" not in code else None

    async def prepare(self, request: LeanRequest) -> Work | None:
        state = self.state
        if state.code_cache is None:
            return None
        found = cached_code(state.code_cache, None, request.param) or await _load_code(
            self.flights, state, request.param
        )
        if found is None or found[1].status != ProgramStatus.ACTIVE:
            return None
        code, program = found
        query = dict(parse_qsl(request.query, keep_blank_values=True))  # the last value wins
        details = _link_details(query, request.headers.get("referer"))
        visit = service.Visit(ip=request.client_ip, user_agent=request.headers.get("user-agent"))

        async def work() -> Answer:
            click = await service.follow_cached_link(
                state.settings, code, program, details, visit, state.click_writer
            )
            location = quote(_landing(program.landing_url, click, code.code), safe=LOCATION_SAFE)
            return Answer(302, [(b"content-length", b"0"), (b"location", location.encode())])

        return work


async def _load_code(flights: SingleFlight, state: Any, text: str) -> tuple[Any, Any] | None:
    """A code not cached, read once (for every request that missed it meanwhile) and cached."""
    if "\x00" in text or len(text) > 64:  # never a code; the full stack answers it
        return None
    return await quietly(
        flights.run(
            ("code", normalize(text)),
            lambda: load_code(state.sessionmaker, state.code_cache, None, text),
        )
    )


def lean_routes(state: Any) -> list[LeanRoute]:
    """The routes app.http.lean answers, over the app's state (caches, writer, settings)."""
    return [_LeanClick(state), _LeanLink(state)]
