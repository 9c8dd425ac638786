"""True reward cost: what the coupons issued in a range were worth, and what they really cost.

One statement on the fulfilments (index program_id, fulfilled_at), counted raw whether the rest
of the summary comes from rollups or not: the table is small next to the event tables, and a
coupon's redemption changes the figures of the range it was issued in (no rollup to keep).

- reward cost issued: the face value (the reward's amount) of the program's coupons issued at
  their provider (fulfilled_at) in the range, in the program's currency.
- reward cost redeemed: of those coupons, what the orders that used them took off (the
  discount the Shopify order or Stripe checkout reports; its face value when it says none),
  whenever they were used.
- reward breakage: issued - redeemed: value promised and never spent.
- reward redemption rate: redeemed ÷ issued.

Store credit and gift cards are left out: their use does not reach this service.
"""

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.money import quantize
from app.fulfilment.models import Fulfilment
from app.metrics.periods import Window
from app.rewards.states import FulfilmentMethod

ZERO = Decimal(0)


@dataclass(frozen=True)
class TrueCost:
    issued: Decimal
    redeemed: Decimal

    @property
    def breakage(self) -> Decimal:
        return self.issued - self.redeemed


async def true_cost(
    session: AsyncSession, program_id: UUID, currency: str, window: Window
) -> TrueCost:
    redeemed = case((Fulfilment.redeemed_at.is_not(None), Fulfilment.redeemed_amount), else_=ZERO)
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(Fulfilment.amount), ZERO),
                func.coalesce(func.sum(redeemed), ZERO),
            ).where(
                Fulfilment.program_id == program_id,
                Fulfilment.fulfilled_at >= window.start,
                Fulfilment.fulfilled_at < window.end,
                Fulfilment.method == FulfilmentMethod.COUPON,
                Fulfilment.currency == currency,
            )
        )
    ).one()
    return TrueCost(
        issued=quantize(Decimal(row[0]), currency), redeemed=quantize(Decimal(row[1]), currency)
    )
