"""GDPR erasure: a person's personal fields go, the numbers they are part of stay."""

import hashlib
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion
from app.core.access import Principal, program_scope
from app.customers.schemas import ErasureOut
from app.emails.service import forget_recipient
from app.referrers.models import Referrer
from app.tracking.models import Click, Referral


def pseudonym(customer_id: str) -> str:
    """A stable stand-in, so counts per customer (referrals, first purchases) stay right."""
    return "erased:" + hashlib.sha256(customer_id.encode()).hexdigest()[:32]


async def erase_customer(
    session: AsyncSession, principal: Principal, customer_id: str, program_id: UUID | None
) -> ErasureOut:
    """Anonymise everything held about `customer_id` in the programs the key may see."""
    programs = program_scope(principal, program_id)
    replacement = pseudonym(customer_id)
    # First, while their addresses are still there: no email to this person, ever again.
    await forget_recipient(session, customer_id, programs)

    async def run(model: type, match: object, values: dict[str, object]) -> int:
        statement = update(model).where(match)  # type: ignore[arg-type]
        if programs is not None:
            statement = statement.where(model.program_id.in_(programs))  # type: ignore[attr-defined]
        result = await session.execute(
            statement.values(**values).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    clicks = await run(
        Click,
        Click.customer_id == customer_id,
        {
            "customer_id": replacement,
            "ip_hash": None,
            "user_agent": None,
            "visitor_id": None,
            "referring_url": None,
            "landing_url": None,
        },
    )
    referrals = await run(
        Referral, Referral.customer_id == customer_id, {"customer_id": replacement, "email": None}
    )
    conversions = await run(
        Conversion,
        Conversion.customer_id == customer_id,
        {"customer_id": replacement, "email": None, "metadata_": {}},
    )
    referrers = await run(
        Referrer,
        Referrer.external_id == customer_id,
        {"external_id": replacement, "email": None, "name": None, "metadata_": {}},
    )
    return ErasureOut(
        customer_id=customer_id,
        replaced_by=replacement,
        clicks=clicks,
        referrals=referrals,
        conversions=conversions,
        referrers=referrers,
    )
