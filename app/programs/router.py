from uuid import UUID

from fastapi import APIRouter

from app.core.errors import PATCH_ERRORS, POST_ERRORS, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.http.auth import AUTHENTICATED_ERRORS, AdminKey, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.programs import service
from app.programs.schemas import ProgramCreate, ProgramOut, ProgramUpdate

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
