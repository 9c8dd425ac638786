from uuid import UUID

from fastapi import APIRouter, Request

from app.core.access import KeyKind, sees_every_program
from app.core.errors import POST_ERRORS, Forbidden, NotFound, problem_responses
from app.http.auth import AUTHENTICATED_ERRORS, AdminKey
from app.http.dependencies import SessionDep
from app.keys import service
from app.keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut

router = APIRouter(
    prefix="/v1/api-keys",
    tags=["api keys"],
    responses=problem_responses(*AUTHENTICATED_ERRORS),
)


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=problem_responses(NotFound, *POST_ERRORS),
)
async def create_key(body: ApiKeyCreate, session: SessionDep, principal: AdminKey) -> ApiKeyCreated:
    if not sees_every_program(principal):
        assert principal.program_ids is not None
        limits = set(body.program_ids or [])
        if not limits or not limits <= principal.program_ids:
            raise Forbidden("A key limited to programs can only make keys for those programs.")
    created = await service.create_key(session, KeyKind(body.kind), body.program_ids, body.name)
    out = ApiKeyOut.model_validate(created.api_key)
    return ApiKeyCreated(**out.model_dump(), key=created.secret)


@router.get("", response_model=list[ApiKeyOut])
async def list_keys(session: SessionDep, principal: AdminKey) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in await service.list_keys(session, principal)]


@router.post(
    "/{key_id}/revoke",
    response_model=ApiKeyOut,
    responses=problem_responses(NotFound, *POST_ERRORS),
)
async def revoke_key(
    key_id: UUID, request: Request, session: SessionDep, principal: AdminKey
) -> ApiKeyOut:
    if not sees_every_program(principal):
        raise Forbidden("Only an admin key for every program may revoke keys.")
    revoked = await service.revoke_key(session, str(key_id))
    if (cache := request.app.state.principal_cache) is not None:
        cache.clear()  # this replica at once; the others when their few seconds are up
    return ApiKeyOut.model_validate(revoked)
