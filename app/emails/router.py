from html import escape
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from app.core.errors import COMMON_ERRORS, PATCH_ERRORS, POST_ERRORS, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.emails import service
from app.emails.models import EmailKind, MessageStatus
from app.emails.rendering import TemplateInvalid
from app.emails.schemas import (
    EmailMessageOut,
    EmailPreviewIn,
    EmailPreviewOut,
    EmailTemplateOut,
    EmailTemplateSet,
)
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.http.ratelimit import PublicRateLimit, RateLimited
from app.programs.service import ProgramNotFound

router = APIRouter(tags=["emails"])
TEMPLATE_PATH = "/v1/programs/{program_id}/email-templates/{event}"
AUTHENTICATED = problem_responses(*AUTHENTICATED_ERRORS)


@router.get(
    "/v1/programs/{program_id}/email-templates",
    response_model=list[EmailTemplateOut],
    responses=AUTHENTICATED | problem_responses(ProgramNotFound),
)
async def list_email_templates(
    program_id: UUID, session: SessionDep, principal: SecretKey
) -> list[EmailTemplateOut]:
    """Every lifecycle email of the program: its templates (the program's own or the default)."""
    return await service.list_templates(session, principal, program_id)


@router.get(
    TEMPLATE_PATH,
    response_model=EmailTemplateOut,
    responses=AUTHENTICATED | problem_responses(ProgramNotFound),
)
async def get_email_template(
    program_id: UUID, event: EmailKind, session: SessionDep, principal: SecretKey
) -> EmailTemplateOut:
    return await service.get_template(session, principal, program_id, event)


@router.put(
    TEMPLATE_PATH,
    response_model=EmailTemplateOut,
    responses=AUTHENTICATED | problem_responses(ProgramNotFound, TemplateInvalid, *PATCH_ERRORS),
)
async def set_email_template(
    program_id: UUID,
    event: EmailKind,
    body: EmailTemplateSet,
    session: SessionDep,
    principal: SecretKey,
) -> EmailTemplateOut:
    """Replace the program's subject and bodies of one email (a part left out is the default)."""
    return await service.set_template(session, principal, program_id, event, body)


@router.delete(
    TEMPLATE_PATH,
    status_code=204,
    response_class=Response,
    responses=AUTHENTICATED | problem_responses(ProgramNotFound),
)
async def reset_email_template(
    program_id: UUID, event: EmailKind, session: SessionDep, principal: SecretKey
) -> Response:
    """Back to the default templates, and the email turned on again."""
    await service.reset_template(session, principal, program_id, event)
    return Response(status_code=204)


@router.post(
    TEMPLATE_PATH + "/preview",
    response_model=EmailPreviewOut,
    responses=AUTHENTICATED | problem_responses(ProgramNotFound, TemplateInvalid, *POST_ERRORS),
)
async def preview_email_template(
    program_id: UUID,
    event: EmailKind,
    body: EmailPreviewIn,
    request: Request,
    session: SessionDep,
    principal: SecretKey,
) -> EmailPreviewOut:
    """The email rendered with sample data, with the parts given (or the saved ones)."""
    return await service.preview(
        session, principal, request.app.state.settings, program_id, event, body
    )


@router.get(
    "/v1/programs/{program_id}/email-messages",
    response_model=Page[EmailMessageOut],
    responses=AUTHENTICATED | problem_responses(ProgramNotFound, *PAGE_ERRORS),
)
async def list_email_messages(
    program_id: UUID,
    session: SessionDep,
    principal: SecretKey,
    page: PageDep,
    status: MessageStatus | None = None,
    event: EmailKind | None = None,
) -> Page[EmailMessageOut]:
    """The program's email outbox; `status=unknown`: interrupted sends, never re-sent."""
    rows, next_cursor = await service.list_messages(
        session, principal, program_id, page, status, event
    )
    return Page(data=rows, next_cursor=next_cursor)


# --- unsubscribing: pages for people, and RFC 8058 one-click POSTs from mail clients -------

TokenQuery = Annotated[str, Query(min_length=1, max_length=200)]
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _page_responses(*extra: Any) -> dict[int | str, dict[str, Any]]:
    responses = problem_responses(
        service.InvalidUnsubscribeToken, RateLimited, *COMMON_ERRORS, *extra
    )
    responses[400]["content"]["text/html"] = {}
    responses[400]["description"] += " (an HTML page)"
    return responses | {200: {"content": {"text/html": {}}, "description": "An HTML page"}}


def _page(title: str, paragraphs: list[str], status: int = 200, form: str = "") -> HTMLResponse:
    text = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title>"
        "<body style='font-family:system-ui;max-width:32rem;margin:4rem auto;padding:0 1rem'>"
        f"<h1>{escape(title)}</h1>{text}{form}</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "This link is not valid",
        ["Open the unsubscribe link from the email again, without changing it."],
        status=400,
    )


@router.get("/unsubscribe", response_class=HTMLResponse, responses=_page_responses())
async def unsubscribe_page(
    token: TokenQuery, request: Request, session: SessionDep, _rate: PublicRateLimit
) -> HTMLResponse:
    """Asks to confirm (a GET changes nothing: mail scanners open links)."""
    try:
        program = await service.unsubscribe_target(session, request.app.state.settings, token)
    except service.InvalidUnsubscribeToken:
        return _invalid()
    form = (
        f"<form method=post action='/unsubscribe?token={escape(token)}'>"
        "<input type=hidden name=List-Unsubscribe value=One-Click>"
        "<button type=submit>Unsubscribe</button></form>"
    )
    return _page(
        "Unsubscribe",
        [f"Stop all emails of {program.name} to this address?"],
        form=form,
    )


@router.post("/unsubscribe", response_class=HTMLResponse, responses=_page_responses(*POST_ERRORS))
async def unsubscribe(
    token: TokenQuery, request: Request, session: SessionDep, _rate: PublicRateLimit
) -> HTMLResponse:
    """One click (RFC 8058) or the page's button: no email of the program to this address again."""
    try:
        program = await service.unsubscribe(session, request.app.state.settings, token)
    except service.InvalidUnsubscribeToken:
        return _invalid()
    return _page(
        "You are unsubscribed",
        [f"This address gets no more emails of {program.name}."],
    )
