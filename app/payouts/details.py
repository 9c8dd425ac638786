"""Charities of a program, and each referrer's payout details and charity choice.

Payout details are personal data that paying needs whole (the PayPal file, a bank transfer),
so they are stored as given, not hashed. They are answered masked everywhere (the merchant's
own API included, so that no stored Idempotency-Key answer or webhook event holds a copy),
written whole only into the batch exports, never logged, and cleared by customer erasure.
"""

import re
from decimal import Decimal
from uuid import UUID

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, get_visible
from app.core.db import utcnow
from app.core.errors import AppError
from app.core.money import quantize
from app.payouts.due import due
from app.payouts.models import Charity
from app.payouts.schemas import (
    CharityChoice,
    CharityCreate,
    CharityOut,
    CharityUpdate,
    PayoutSettings,
    PayoutSettingsUpdate,
    ReferrerPayoutSettings,
)
from app.payouts.states import PayoutMethod
from app.programs.service import get_program
from app.referrers.models import Referrer
from app.referrers.service import get_referrer
from app.rewards.models import Reward
from app.rewards.states import FulfilmentMethod

MAX_CHARITIES_PER_PROGRAM = 100
# What PayPal Payouts takes as a recipient: an email, a domestic mobile number, a PayerID.
# The first character is a letter or digit, so that no spreadsheet reads the cell as a formula.
PAYPAL_EMAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PAYPAL_PHONE = re.compile(r"[0-9]{7,15}")
PAYPAL_PAYER_ID = re.compile(r"[A-Z0-9]{13}")


class CharityNotFound(AppError):
    status, code, title = 404, "charity_not_found", "Charity not found"


class UnknownCharity(AppError):
    status, code, title = 422, "unknown_charity", "The charity is not one of the program's"


class TooManyCharities(AppError):
    status, code, title = 422, "too_many_charities", "The program has too many charities"


class InvalidPayoutDetails(AppError):
    status, code, title = 422, "invalid_payout_details", "The payout details are not valid"


SETTINGS_ERRORS: tuple[type[AppError], ...] = (UnknownCharity, InvalidPayoutDetails)


# --- charities ----------------------------------------------------------------------------


async def create_charity(
    session: AsyncSession, principal: Principal, program_id: UUID, data: CharityCreate
) -> CharityOut:
    program = await get_program(session, principal, program_id, key_share=True)
    count = await session.scalar(
        select(func.count()).select_from(Charity).where(Charity.program_id == program.id)
    )
    if (count or 0) >= MAX_CHARITIES_PER_PROGRAM:
        raise TooManyCharities(f"A program may list at most {MAX_CHARITIES_PER_PROGRAM} charities.")
    now = utcnow()
    charity = Charity(
        created_at=now,
        updated_at=now,
        program_id=program.id,
        name=data.name,
        registration_number=data.registration_number,
        url=str(data.url) if data.url else None,
        active=True,
    )
    session.add(charity)
    await session.flush()
    return CharityOut.model_validate(charity)


async def list_charities(
    session: AsyncSession, principal: Principal, program_id: UUID
) -> list[CharityOut]:
    program = await get_program(session, principal, program_id)
    rows = await session.scalars(
        select(Charity)
        .where(Charity.program_id == program.id)
        .order_by(Charity.created_at, Charity.id)
    )
    # Donations accumulate per charity: the referrers' current choice, one grouped statement.
    totals = await session.execute(
        select(
            Referrer.charity_id, func.sum(Reward.amount), func.count(distinct(Reward.referrer_id))
        )
        .join(Referrer, Referrer.id == Reward.referrer_id)
        .where(
            due(program.id, FulfilmentMethod.DONATION, program.currency, utcnow()),
            Referrer.charity_id.is_not(None),
        )
        .group_by(Referrer.charity_id)
    )
    owed = {charity_id: (Decimal(amount), int(donors)) for charity_id, amount, donors in totals}
    return [
        CharityOut.model_validate(row).model_copy(
            update={
                "accumulated": quantize(owed.get(row.id, (Decimal(0), 0))[0], program.currency),
                "donors": owed.get(row.id, (Decimal(0), 0))[1],
            }
        )
        for row in rows
    ]


async def update_charity(
    session: AsyncSession, principal: Principal, charity_id: UUID, data: CharityUpdate
) -> CharityOut:
    query = select(Charity).where(Charity.id == charity_id).with_for_update()
    charity = await get_visible(session, query, principal, CharityNotFound, Charity.program_id)
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "active"):
        if field in changes and changes[field] is None:
            raise InvalidPayoutDetails(f"{field} cannot be null")
    if "url" in changes:
        changes["url"] = str(changes["url"]) if changes["url"] else None
    for field, value in changes.items():
        setattr(charity, field, value)
    charity.updated_at = utcnow()
    await session.flush()
    return CharityOut.model_validate(charity)


async def active_charities(session: AsyncSession, program_id: UUID) -> list[CharityChoice]:
    """What a referrer may choose from (PATCH /v1/me)."""
    rows = await session.scalars(
        select(Charity)
        .where(Charity.program_id == program_id, Charity.active.is_(True))
        .order_by(Charity.created_at, Charity.id)
    )
    return [CharityChoice.model_validate(row) for row in rows]


# --- a referrer's payout details and charity ------------------------------------------------


def mask(recipient: str | None) -> str | None:
    """p***@e***.com for an email, ****1234 for anything else: recognisable, not usable."""
    if recipient is None:
        return None
    if "@" in recipient:
        local, _, domain = recipient.partition("@")
        host, _, tld = domain.rpartition(".")
        return f"{local[:1]}***@{host[:1]}***.{tld}" if host else f"{local[:1]}***@***"
    return "****" + (recipient[-4:] if len(recipient) > 8 else "")


def _checked_recipient(method: PayoutMethod, recipient: str) -> str:
    if method != PayoutMethod.PAYPAL:
        return recipient
    if PAYPAL_EMAIL.fullmatch(recipient):
        return recipient.lower()
    if PAYPAL_PHONE.fullmatch(recipient) or PAYPAL_PAYER_ID.fullmatch(recipient):
        return recipient
    raise InvalidPayoutDetails(
        "A paypal recipient is the PayPal account's email, a mobile number (digits only) or a "
        "PayerID (13 capital letters and digits)."
    )


async def settings_of(session: AsyncSession, referrer: Referrer) -> PayoutSettings:
    charity = None
    if referrer.charity_id is not None:
        row = await session.get(Charity, referrer.charity_id)
        charity = CharityChoice.model_validate(row) if row is not None else None
    method = PayoutMethod(referrer.payout_method) if referrer.payout_method else None
    return PayoutSettings(
        payout_method=method, payout_recipient=mask(referrer.payout_recipient), charity=charity
    )


async def apply_settings(
    session: AsyncSession, referrer: Referrer, data: PayoutSettingsUpdate
) -> None:
    """Change what the update names; the details are set (or cleared) as a pair."""
    changes = data.model_dump(exclude_unset=True)
    if "payout_method" in changes or "payout_recipient" in changes:
        method, recipient = changes.get("payout_method"), changes.get("payout_recipient")
        if (method is None) != (recipient is None):
            raise InvalidPayoutDetails(
                "payout_method and payout_recipient are set together (both null clears them)."
            )
        if method is not None and recipient is not None:
            recipient = _checked_recipient(PayoutMethod(method), recipient)
        referrer.payout_method, referrer.payout_recipient = method, recipient
    if "charity_id" in changes:
        charity_id = changes["charity_id"]
        if charity_id is not None:
            found = await session.scalar(
                select(Charity.id).where(
                    Charity.id == charity_id,
                    Charity.program_id == referrer.program_id,
                    Charity.active.is_(True),
                )
            )
            if found is None:
                raise UnknownCharity(
                    "Choose one of the program's active charities (GET /v1/me lists them)."
                )
        referrer.charity_id = charity_id
    await session.flush()


async def referrer_settings(
    session: AsyncSession, principal: Principal, referrer_id: UUID
) -> ReferrerPayoutSettings:
    referrer, _ = await get_referrer(session, principal, referrer_id)
    shown = await settings_of(session, referrer)
    return ReferrerPayoutSettings(referrer_id=referrer.id, **shown.model_dump())


async def update_referrer_settings(
    session: AsyncSession, principal: Principal, referrer_id: UUID, data: PayoutSettingsUpdate
) -> ReferrerPayoutSettings:
    referrer, _ = await get_referrer(session, principal, referrer_id)
    await apply_settings(session, referrer, data)
    shown = await settings_of(session, referrer)
    return ReferrerPayoutSettings(referrer_id=referrer.id, **shown.model_dump())
