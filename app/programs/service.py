from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, get_visible, scoped, sees_every_program
from app.core.db import utcnow
from app.core.errors import AppError, Forbidden, Unprocessable
from app.core.pagination import PageParams, paginate
from app.programs.models import Program, ProgramStatus
from app.programs.schemas import ProgramCreate, ProgramUpdate

NULLABLE_FIELDS = {"referee_offer", "reminder_after_days"}


class ProgramNotFound(AppError):
    status, code, title = 404, "program_not_found", "Program not found"


class ProgramNotActive(AppError):
    status, code, title = 409, "program_not_active", "The program is not active"


async def create_program(
    session: AsyncSession, principal: Principal, data: ProgramCreate
) -> Program:
    """Create a program; only keys not limited to programs may."""
    if not sees_every_program(principal):
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
        reminder_after_days=data.reminder_after_days,
        status=ProgramStatus.ACTIVE,
    )
    session.add(program)
    await session.flush()
    return program


async def get_program(
    session: AsyncSession, principal: Principal, program_id: UUID, *, for_update: bool = False
) -> Program:
    """The program, or ProgramNotFound when it does not exist or the key may not see it."""
    query = select(Program).where(Program.id == program_id)
    if for_update:
        query = query.with_for_update()
    return await get_visible(session, query, principal, ProgramNotFound, Program.id)


async def list_programs(
    session: AsyncSession, principal: Principal, params: PageParams
) -> tuple[list[Program], str | None]:
    query = scoped(select(Program), principal, Program.id)
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
    if program.status != ProgramStatus.ACTIVE:
        raise ProgramNotActive(f"The program is {program.status}; it takes no new referrals.")
