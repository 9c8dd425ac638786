from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import ensure_program_access
from app.db import utcnow
from app.errors import AppError, Forbidden, Unprocessable
from app.keys.service import Principal
from app.pagination import PageParams, paginate
from app.programs.models import Program
from app.programs.schemas import ProgramCreate, ProgramUpdate

NULLABLE_FIELDS = {"referee_offer"}


class ProgramNotFound(AppError):
    status, code, title = 404, "program_not_found", "Program not found"


class ProgramNotActive(AppError):
    status, code, title = 409, "program_not_active", "The program is not active"


async def create_program(
    session: AsyncSession, principal: Principal, data: ProgramCreate
) -> Program:
    """Create a program; only keys not limited to programs may."""
    if principal.program_ids is not None:
        raise Forbidden("A key limited to programs cannot create programs.")
    now = utcnow()
    program = Program(
        created_at=now,
        updated_at=now,
        name=data.name,
        landing_url=str(data.landing_url),
        currency=data.currency,
        attribution_model=data.attribution_model,
        attribution_window_days=data.attribution_window_days,
        referee_offer=data.referee_offer,
        allowed_origins=list(data.allowed_origins),
        status="active",
    )
    session.add(program)
    await session.flush()
    return program


async def get_program(
    session: AsyncSession, principal: Principal, program_id: UUID, *, for_update: bool = False
) -> Program:
    """The program, or ProgramNotFound when it does not exist or the key may not see it."""
    ensure_program_access(principal, program_id, ProgramNotFound)
    query = select(Program).where(Program.id == program_id)
    if for_update:
        query = query.with_for_update()
    program = await session.scalar(query)
    if program is None:
        raise ProgramNotFound()
    return program


async def list_programs(
    session: AsyncSession, principal: Principal, params: PageParams
) -> tuple[list[Program], str | None]:
    query = select(Program)
    if principal.program_ids is not None:
        query = query.where(Program.id.in_(principal.program_ids))
    return await paginate(session, query, Program, params)


async def update_program(
    session: AsyncSession, principal: Principal, program_id: UUID, data: ProgramUpdate
) -> Program:
    """Change the fields given in the body; an explicit null is refused where one is required."""
    program = await get_program(session, principal, program_id, for_update=True)
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field not in NULLABLE_FIELDS:
            raise Unprocessable(f"{field} cannot be null")
        if field == "landing_url":
            value = str(value)
        setattr(program, field, value)
    await session.flush()
    return program


def ensure_active(program: Program) -> None:
    if program.status != "active":
        raise ProgramNotActive(f"The program is {program.status}; it takes no new referrals.")
