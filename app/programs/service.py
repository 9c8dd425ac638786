from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion
from app.core.access import Principal, get_visible, scoped, sees_every_program
from app.core.db import utcnow
from app.core.errors import AppError, Forbidden, Unprocessable
from app.core.pagination import PageParams, paginate
from app.points.models import PointsItem
from app.programs.models import Program, ProgramStatus
from app.programs.schemas import ProgramCreate, ProgramUpdate
from app.rewards.models import RewardRule

NULLABLE_FIELDS = {"referee_offer", "reminder_after_days"}


class ProgramNotFound(AppError):
    status, code, title = 404, "program_not_found", "Program not found"


class ProgramNotActive(AppError):
    status, code, title = 409, "program_not_active", "The program is not active"


class CurrencyLocked(AppError):
    status, code, title = 409, "currency_locked", "The program's currency can no longer change"


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
        redemption_proof=data.redemption_proof,
        reminder_after_days=data.reminder_after_days,
        auto_enrol_buyers=data.auto_enrol_buyers,
        status=ProgramStatus.ACTIVE,
    )
    session.add(program)
    await session.flush()
    return program


async def get_program(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    *,
    for_update: bool = False,
    key_share: bool = False,
) -> Program:
    """The program, or ProgramNotFound when it does not exist or the key may not see it.

    `for_update` locks the row against every other lock; `key_share` takes the weak lock a
    foreign key check takes anyway: it lets other writers through but not a `for_update`, so a
    purchase that read the program's currency commits before the currency can change.
    """
    query = select(Program).where(Program.id == program_id)
    if for_update:
        query = query.with_for_update()
    elif key_share:
        query = query.with_for_update(read=True, key_share=True)
    return await get_visible(session, query, principal, ProgramNotFound, Program.id)


async def list_programs(
    session: AsyncSession, principal: Principal, params: PageParams
) -> tuple[list[Program], str | None]:
    query = scoped(select(Program), principal, Program.id)
    return await paginate(session, query, Program, params)


async def update_program(
    session: AsyncSession, principal: Principal, program_id: UUID, data: ProgramUpdate
) -> Program:
    """Change the fields given in the body; an explicit null is refused where one is required,
    and the currency once amounts are counted in it (CurrencyLocked)."""
    program = await get_program(session, principal, program_id, for_update=True)
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field not in NULLABLE_FIELDS:
            raise Unprocessable(f"{field} cannot be null")
    if changes.get("currency", program.currency) != program.currency:
        await _ensure_currency_unused(session, program)
    for field, value in changes.items():
        if field == "landing_url":
            value = str(value)
        setattr(program, field, value)
    await session.flush()
    return program


async def _ensure_currency_unused(session: AsyncSession, program: Program) -> None:
    """CurrencyLocked once an amount in the currency is stored: rules, catalogue items,
    purchases, rewards.

    Amounts carry no currency of their own (a rule's minimum order, a fixed reward, revenue),
    so another currency would reinterpret them. Called with the program row locked: a rule
    (which locks it too) or a purchase (which holds a key-share lock) cannot slip in between.
    """
    counted: dict[Any, str] = {
        RewardRule: "reward rules",
        PointsItem: "points catalogue items",
        Conversion: "conversions",
    }
    for model, what in counted.items():
        used = await session.scalar(select(model.id).where(model.program_id == program.id).limit(1))
        if used is not None:
            raise CurrencyLocked(
                f"The program counts in {program.currency} and already has {what}; its "
                "currency can no longer change. Create a new program for another currency."
            )


def ensure_active(program: Program) -> None:
    if program.status != ProgramStatus.ACTIVE:
        raise ProgramNotActive(f"The program is {program.status}; it takes no new referrals.")
