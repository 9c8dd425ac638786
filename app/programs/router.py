from uuid import UUID

from fastapi import APIRouter

from app.auth import AdminKey, SecretKey
from app.db import SessionDep
from app.errors import Forbidden, Unauthorized, problem_responses
from app.pagination import Page, PageDep
from app.programs import service
from app.programs.schemas import ProgramCreate, ProgramOut, ProgramUpdate

router = APIRouter(
    prefix="/v1/programs",
    tags=["programs"],
    responses=problem_responses(Unauthorized, Forbidden),
)


@router.post("", status_code=201, response_model=ProgramOut)
async def create_program(body: ProgramCreate, session: SessionDep, principal: AdminKey) -> ProgramOut:
    program = await service.create_program(session, principal, body)
    return ProgramOut.model_validate(program)


@router.get("", response_model=Page[ProgramOut])
async def list_programs(session: SessionDep, principal: SecretKey, page: PageDep) -> Page[ProgramOut]:
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
    responses=problem_responses(service.ProgramNotFound),
)
async def update_program(
    program_id: UUID, body: ProgramUpdate, session: SessionDep, principal: SecretKey
) -> ProgramOut:
    program = await service.update_program(session, principal, program_id, body)
    return ProgramOut.model_validate(program)
