"""The points catalogue: what a program's referrers may spend their points on.

Items are checked against the program's providers like rules are (app.fulfilment.jobs): a
method that needs a provider the program has not configured, or a value the provider cannot
express, is refused before anything is stored. Spending is app.points.redemptions.
"""

from typing import Any
from uuid import UUID

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, get_visible
from app.core.db import utcnow
from app.core.errors import AppError
from app.core.money import has_valid_precision, minor_unit, quantize
from app.fulfilment import jobs as fulfilment
from app.points.models import PointsItem, PointsRedemption
from app.points.schemas import ItemCreate, ItemOut, ItemUpdate
from app.programs.models import Program
from app.programs.service import get_program
from app.rewards.states import FulfilmentMethod

MAX_ITEMS_PER_PROGRAM = 100
# Cash and donations are paid in batches, to a payee the referrer chose: not catalogue items.
CATALOGUE_METHODS = frozenset(
    {
        FulfilmentMethod.LEDGER,
        FulfilmentMethod.COUPON,
        FulfilmentMethod.STORE_CREDIT,
        FulfilmentMethod.GIFT_CARD,
    }
)
ITEM_FIELDS = (
    "name",
    "points",
    "amount",
    "fulfilment",
    "fulfilment_provider",
    "coupon_percent",
    "active",
)


class ItemNotFound(AppError):
    status, code, title = 404, "points_item_not_found", "Points catalogue item not found"


class TooManyItems(AppError):
    status, code, title = 422, "too_many_points_items", "The program's catalogue is full"


class InvalidItem(AppError):
    status, code, title = 422, "invalid_points_item", "The catalogue item is not valid"


ITEM_ERRORS: tuple[type[AppError], ...] = (InvalidItem, *fulfilment.RULE_ERRORS)


async def _check(session: AsyncSession, program: Program, data: ItemCreate) -> None:
    if data.fulfilment not in CATALOGUE_METHODS:
        names = ", ".join(sorted(CATALOGUE_METHODS))
        raise fulfilment.InvalidFulfilment(
            f"A catalogue item is delivered as one of {names}; {data.fulfilment} rewards are "
            "paid in batches."
        )
    if not has_valid_precision(data.amount, program.currency):
        # A provider's method answers value_not_expressible (check_terms); the ledger's too.
        await fulfilment.check_terms(session, program, data, [data.amount])
        raise InvalidItem(
            f"{data.amount} has more decimals than {program.currency} allows "
            f"({minor_unit(program.currency)})"
        )
    await fulfilment.check_terms(session, program, data, [data.amount])


def item_out(item: PointsItem, program: Program) -> ItemOut:
    return ItemOut.model_validate({**_values(item), "currency": program.currency, **_meta(item)})


def _values(item: PointsItem) -> dict[str, Any]:
    return {field: getattr(item, field) for field in ITEM_FIELDS}


def _meta(item: PointsItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "program_id": item.program_id,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
    }


async def create_item(
    session: AsyncSession, principal: Principal, program_id: UUID, data: ItemCreate
) -> ItemOut:
    program = await get_program(session, principal, program_id, for_update=True)
    count = await session.scalar(
        select(func.count()).select_from(PointsItem).where(PointsItem.program_id == program.id)
    )
    if (count or 0) >= MAX_ITEMS_PER_PROGRAM:
        raise TooManyItems(f"A program may list at most {MAX_ITEMS_PER_PROGRAM} items.")
    await _check(session, program, data)
    now = utcnow()
    item = PointsItem(
        program_id=program.id, created_at=now, updated_at=now, **data.model_dump(mode="python")
    )
    session.add(item)
    await session.flush()
    return item_out(item, program)


async def list_items(
    session: AsyncSession, principal: Principal, program_id: UUID, *, active_only: bool = False
) -> list[ItemOut]:
    program = await get_program(session, principal, program_id)
    query = select(PointsItem).where(PointsItem.program_id == program.id)
    if active_only:
        query = query.where(PointsItem.active.is_(True))
    items = await session.scalars(query.order_by(PointsItem.points, PointsItem.created_at))
    return [item_out(item, program) for item in items]


async def get_item(
    session: AsyncSession, principal: Principal, item_id: UUID, *, for_update: bool = False
) -> tuple[PointsItem, Program]:
    query = select(PointsItem).where(PointsItem.id == item_id)
    if for_update:
        query = query.with_for_update()
    item = await get_visible(session, query, principal, ItemNotFound, PointsItem.program_id)
    program = await session.get(Program, item.program_id)
    assert program is not None
    return item, program


async def read_item(session: AsyncSession, principal: Principal, item_id: UUID) -> ItemOut:
    item, program = await get_item(session, principal, item_id)
    return item_out(item, program)


async def update_item(
    session: AsyncSession, principal: Principal, item_id: UUID, data: ItemUpdate
) -> ItemOut:
    """Change the item; redemptions already made keep what they bought (their reward)."""
    item, program = await get_item(session, principal, item_id, for_update=True)
    current = _values(item)
    current["amount"] = quantize(item.amount, program.currency)
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "points", "amount", "fulfilment", "active"):
        if field in changes and changes[field] is None:
            raise InvalidItem(f"{field} cannot be null")
    if changes.get("fulfilment") not in (None, item.fulfilment):
        # A new method starts its provider and percent afresh unless they are given.
        current["fulfilment_provider"] = current["coupon_percent"] = None
    try:
        merged = ItemCreate.model_validate({**current, **changes})
    except ValidationError as exc:
        raise InvalidItem(str(exc.errors()[0]["msg"])) from exc
    await _check(session, program, merged)
    for field, value in merged.model_dump(mode="python").items():
        setattr(item, field, value)
    item.updated_at = utcnow()
    await session.flush()
    return item_out(item, program)


async def delete_item(session: AsyncSession, principal: Principal, item_id: UUID) -> None:
    """Remove an item nobody redeemed; a redeemed one is deactivated instead (its redemptions
    keep pointing at it)."""
    item, _ = await get_item(session, principal, item_id, for_update=True)
    redeemed = await session.scalar(
        select(PointsRedemption.id).where(PointsRedemption.item_id == item.id).limit(1)
    )
    if redeemed is not None:
        item.active, item.updated_at = False, utcnow()
    else:
        await session.delete(item)
    await session.flush()
