from uuid import UUID

from fastapi import APIRouter, Request

from app.core.errors import POST_ERRORS, problem_responses
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import SessionDep
from app.referrer_sessions import service
from app.referrer_sessions.schemas import (
    PortalLink,
    SessionCreate,
    SessionCreated,
    SessionOut,
    SessionsRevoked,
)
from app.referrers.service import ReferrerNotFound

router = APIRouter(tags=["referrer sessions"], responses=problem_responses(*AUTHENTICATED_ERRORS))


def _forget_cached_sessions(request: Request) -> None:
    if (cache := request.app.state.session_cache) is not None:
        cache.clear()  # this replica at once; the others when their few seconds are up


@router.post(
    "/v1/referrers/{referrer_id}/sessions",
    status_code=201,
    response_model=SessionCreated,
    responses=problem_responses(ReferrerNotFound, service.InvalidTtl, *POST_ERRORS),
)
async def mint_session(
    referrer_id: UUID,
    request: Request,
    session: SessionDep,
    principal: SecretKey,
    body: SessionCreate | None = None,
) -> SessionCreated:
    """A short-lived token with which this referrer (and nobody else) calls /v1/me…."""
    return await service.mint_session(
        session, principal, request.app.state.settings, referrer_id, body
    )


@router.post(
    "/v1/referrers/{referrer_id}/portal-links",
    status_code=201,
    response_model=PortalLink,
    responses=problem_responses(ReferrerNotFound, service.InvalidTtl, *POST_ERRORS),
)
async def mint_portal_link(
    referrer_id: UUID,
    request: Request,
    session: SessionDep,
    principal: SecretKey,
    body: SessionCreate | None = None,
) -> PortalLink:
    """A magic link to the hosted portal (`…/portal#token=…`) with a fresh session token."""
    return await service.mint_portal_link(
        session, principal, request.app.state.settings, referrer_id, body
    )


@router.post(
    "/v1/referrers/{referrer_id}/sessions/revoke",
    response_model=SessionsRevoked,
    responses=problem_responses(ReferrerNotFound, *POST_ERRORS),
)
async def revoke_referrer_sessions(
    referrer_id: UUID, request: Request, session: SessionDep, principal: SecretKey
) -> SessionsRevoked:
    """Revoke every live session of the referrer."""
    revoked = await service.revoke_referrer_sessions(session, principal, referrer_id)
    _forget_cached_sessions(request)
    return revoked


@router.post(
    "/v1/referrer-sessions/{session_id}/revoke",
    response_model=SessionOut,
    responses=problem_responses(service.SessionNotFound, *POST_ERRORS),
)
async def revoke_session(
    session_id: UUID, request: Request, session: SessionDep, principal: SecretKey
) -> SessionOut:
    """Revoke one session; its token answers 401 `session_revoked` from now on."""
    revoked = await service.revoke_session(session, principal, session_id)
    _forget_cached_sessions(request)
    return revoked
