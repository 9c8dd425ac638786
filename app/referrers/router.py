from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request, Response

from app.core.errors import PATCH_ERRORS, POST_ERRORS, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.cors import OriginNotAllowed, WidgetKey
from app.http.dependencies import PageDep, SessionDep
from app.http.ratelimit import CodeLookupRateLimit, PublicRateLimit, RateLimited
from app.programs.service import ProgramNotFound
from app.referrers import service
from app.referrers.schemas import (
    CodeCreate,
    CodeLookup,
    CodeOut,
    CodeUpdate,
    ReferrerOut,
    ReferrerUpsert,
)

router = APIRouter(tags=["referrers"], responses=problem_responses(*AUTHENTICATED_ERRORS))

# Codes are at most 32 characters; 64 leaves room and keeps lookups of junk cheap.
CodePath = Annotated[str, Path(min_length=1, max_length=64)]


@router.post(
    "/v1/programs/{program_id}/referrers",
    status_code=201,
    response_model=ReferrerOut,
    responses=problem_responses(ProgramNotFound, *POST_ERRORS)
    | {200: {"model": ReferrerOut, "description": "The referrer existed; updated"}},
)
async def upsert_referrer(
    program_id: UUID,
    body: ReferrerUpsert,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: SecretKey,
) -> ReferrerOut:
    referrer, created = await service.upsert_referrer(
        session, principal, request.app.state.settings, program_id, body
    )
    response.status_code = 201 if created else 200
    return referrer


@router.get(
    "/v1/programs/{program_id}/referrers",
    response_model=Page[ReferrerOut],
    responses=problem_responses(ProgramNotFound, *PAGE_ERRORS),
)
async def list_referrers(
    program_id: UUID, request: Request, session: SessionDep, principal: SecretKey, page: PageDep
) -> Page[ReferrerOut]:
    rows, next_cursor = await service.list_referrers(
        session, principal, request.app.state.settings, program_id, page
    )
    return Page(data=rows, next_cursor=next_cursor)


@router.get(
    "/v1/referrers/{referrer_id}",
    response_model=ReferrerOut,
    responses=problem_responses(service.ReferrerNotFound),
)
async def get_referrer(
    referrer_id: UUID, request: Request, session: SessionDep, principal: SecretKey
) -> ReferrerOut:
    referrer, program = await service.get_referrer(session, principal, referrer_id)
    return await service.referrer_out(session, request.app.state.settings, referrer, program)


@router.post(
    "/v1/referrers/{referrer_id}/codes",
    status_code=201,
    response_model=CodeOut,
    tags=["codes"],
    responses=problem_responses(service.ReferrerNotFound, service.CodeTaken, *POST_ERRORS),
)
async def create_code(
    referrer_id: UUID, body: CodeCreate, request: Request, session: SessionDep, principal: SecretKey
) -> CodeOut:
    return await service.create_code(
        session, principal, request.app.state.settings, referrer_id, body
    )


@router.get(
    "/v1/referrers/{referrer_id}/codes",
    response_model=list[CodeOut],
    tags=["codes"],
    responses=problem_responses(service.ReferrerNotFound),
)
async def list_codes(
    referrer_id: UUID, request: Request, session: SessionDep, principal: SecretKey
) -> list[CodeOut]:
    return await service.list_codes(session, principal, request.app.state.settings, referrer_id)


@router.get(
    "/v1/codes/{code}",
    response_model=CodeLookup,
    tags=["codes"],
    responses=problem_responses(service.CodeNotFound, RateLimited, OriginNotAllowed),
)
async def lookup_code(
    code: CodePath,
    session: SessionDep,
    principal: WidgetKey,
    _public: PublicRateLimit,
    _lookup: CodeLookupRateLimit,
) -> CodeLookup:
    return await service.lookup_code(session, principal, code)


@router.patch(
    "/v1/codes/{code}",
    response_model=CodeOut,
    tags=["codes"],
    responses=problem_responses(service.CodeNotFound, *PATCH_ERRORS),
)
async def update_code(
    code: CodePath,
    body: CodeUpdate,
    request: Request,
    session: SessionDep,
    principal: SecretKey,
) -> CodeOut:
    return await service.update_code(session, principal, request.app.state.settings, code, body)
