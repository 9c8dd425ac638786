from uuid import UUID

from fastapi import APIRouter, Response

from app.core.errors import PATCH_ERRORS, POST_ERRORS, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.http.auth import AUTHENTICATED_ERRORS, AdminKey, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.programs import service, tokens
from app.programs.schemas import (
    ProgramCreate,
    ProgramOut,
    ProgramUpdate,
    TokenSecretCreated,
    TokenSecretOut,
)

router = APIRouter(
    prefix="/v1/programs",
    tags=["programs"],
    responses=problem_responses(*AUTHENTICATED_ERRORS),
)


@router.post(
    "", status_code=201, response_model=ProgramOut, responses=problem_responses(*POST_ERRORS)
)
async def create_program(
    body: ProgramCreate, session: SessionDep, principal: AdminKey
) -> ProgramOut:
    program = await service.create_program(session, principal, body)
    return ProgramOut.model_validate(program)


@router.get("", response_model=Page[ProgramOut], responses=problem_responses(*PAGE_ERRORS))
async def list_programs(
    session: SessionDep, principal: SecretKey, page: PageDep
) -> Page[ProgramOut]:
    programs, next_cursor = await service.list_programs(session, principal, page)
    return Page(data=[ProgramOut.model_validate(p) for p in programs], next_cursor=next_cursor)


@router.get(
    "/{program_id}",
    response_model=ProgramOut,
    responses=problem_responses(service.ProgramNotFound),
)
async def get_program(program_id: UUID, session: SessionDep, principal: SecretKey) -> ProgramOut:
    return ProgramOut.model_validate(await service.get_program(session, principal, program_id))


@router.patch(
    "/{program_id}",
    response_model=ProgramOut,
    responses=problem_responses(service.ProgramNotFound, service.CurrencyLocked, *PATCH_ERRORS),
)
async def update_program(
    program_id: UUID, body: ProgramUpdate, session: SessionDep, principal: SecretKey
) -> ProgramOut:
    """Change the fields given. The currency is locked (409) once rules or conversions exist."""
    program = await service.update_program(session, principal, program_id, body)
    return ProgramOut.model_validate(program)


@router.post(
    "/{program_id}/customer-token-secrets",
    status_code=201,
    response_model=TokenSecretCreated,
    responses=problem_responses(service.ProgramNotFound, tokens.TooManyTokenSecrets, *POST_ERRORS),
)
async def create_token_secret(
    program_id: UUID, session: SessionDep, principal: SecretKey
) -> TokenSecretCreated:
    """A new secret for signing customer tokens; the whole secret is shown this once."""
    return await tokens.create_secret(session, principal, program_id)


@router.get(
    "/{program_id}/customer-token-secrets",
    response_model=list[TokenSecretOut],
    responses=problem_responses(service.ProgramNotFound),
)
async def list_token_secrets(
    program_id: UUID, session: SessionDep, principal: SecretKey
) -> list[TokenSecretOut]:
    """The program's customer token secrets, by prefix."""
    return await tokens.list_secrets(session, principal, program_id)


@router.delete(
    "/{program_id}/customer-token-secrets/{secret_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(service.ProgramNotFound, tokens.TokenSecretNotFound),
)
async def delete_token_secret(
    program_id: UUID, secret_id: UUID, session: SessionDep, principal: SecretKey
) -> Response:
    """Delete a secret: tokens it signed stop working at once."""
    await tokens.delete_secret(session, principal, program_id, secret_id)
    return Response(status_code=204)
