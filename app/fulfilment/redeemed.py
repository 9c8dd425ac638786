"""True reward cost: which issued coupons an order actually used, and what they took off.

The platforms' order webhooks already arrive (app.integrations): a Shopify order lists its
`discount_codes` (code and amount), a Stripe checkout or invoice its discounts (the promotion
code's id, its text when expanded, and the amount from `total_details`). A code this service
minted marks its fulfilment redeemed once (the first order that used it; a coupon is single
use). Store credit and gift cards are spent without a code in those payloads: they are never
marked, and the true-cost figures count coupons only (app.metrics.reward_cost).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.fulfilment.jobs import ISSUED
from app.fulfilment.models import Fulfilment
from app.rewards.states import FulfilmentMethod


@dataclass(frozen=True)
class UsedDiscount:
    """A discount an order used: its code's text and/or the provider's id for it (a Stripe
    promotion code id), and what it took off in the order's currency when the payload says."""

    code: str | None = None
    reference: str | None = None
    amount: Decimal | None = None


async def mark_redeemed(
    session: AsyncSession,
    program_id: UUID,
    provider: str,
    order: str,
    currency: str,
    used: list[UsedDiscount],
    now: datetime,
) -> int:
    """Mark the program's issued coupons among `used` redeemed by `order`; returns how many.

    Idempotent: a coupon already marked (another topic of the same order, a redelivery) is
    left as it is. The discount's amount is the true cost; when the payload does not say it
    (or says it in another currency) the coupon's face value stands in.
    """
    by_code = {d.code.strip().upper(): d for d in used if d.code and d.code.strip()}
    by_reference = {d.reference: d for d in used if d.reference}
    if not by_code and not by_reference:
        return 0
    matches = []
    if by_code:
        matches.append(Fulfilment.code.in_(by_code))
    if by_reference:
        matches.append(Fulfilment.reference.in_(by_reference))
    rows = await session.scalars(
        select(Fulfilment)
        .where(
            Fulfilment.program_id == program_id,
            Fulfilment.provider == provider,
            Fulfilment.method == FulfilmentMethod.COUPON,
            Fulfilment.status.in_(ISSUED),
            Fulfilment.redeemed_at.is_(None),
            or_(*matches),
        )
        .order_by(Fulfilment.id)
        .with_for_update()
    )
    marked = 0
    for row in rows:
        found = by_reference.get(row.reference or "") or by_code.get(row.code or "")
        assert found is not None
        taken = found.amount if currency == row.currency else None
        row.redeemed_at, row.redeemed_order = now, order[:255]
        row.redeemed_amount = taken if taken is not None and taken >= 0 else row.amount
        row.updated_at = now
        marked += 1
    return marked
