from uuid import UUID

from fastapi import APIRouter, Request

from app.core.access import KeyKind
from app.core.errors import POST_ERRORS, NotFound, problem_responses
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
    created = await service.create_key(
        session, KeyKind(body.kind), body.program_ids, body.name, principal
    )
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
    revoked = await service.revoke_key(session, str(key_id), principal)
    if (cache := request.app.state.principal_cache) is not None:
        cache.clear()  # this replica at once; the others when their few seconds are up
    return ApiKeyOut.model_validate(revoked)
