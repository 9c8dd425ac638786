from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self
from uuid import UUID

from pydantic import Field, model_validator

from app.core.money import for_display
from app.core.schemas import MONEY_FORM, InputModel, OutputModel, PositiveMoney
from app.rewards.schemas import CouponPercent, Points, RewardOut
from app.rewards.states import FulfilmentMethod, FulfilmentProvider

Name = Annotated[str, Field(min_length=1, max_length=200)]


class ItemCreate(InputModel):
    """`points` buy a reward of `amount` (the program's currency), delivered like a rule's."""

    name: Name = Field(description="What the referrer sees, e.g. “$5 off your next order”")
    points: Points = Field(description="What the item costs, in points")
    amount: PositiveMoney = Field(
        description="The reward's value in the program's currency: the coupon's amount off, "
        "the store credit or the gift card (a percent coupon books this value); money as "
        f"{MONEY_FORM}."
    )
    fulfilment: FulfilmentMethod = Field(
        description="ledger (delivered by hand, mark-paid), coupon, store_credit or gift_card "
        "(issued by fulfilment_provider)"
    )
    fulfilment_provider: FulfilmentProvider | None = Field(
        default=None,
        description="Who issues coupon, store_credit and gift_card items; the program must have "
        "its credentials (POST /v1/programs/{id}/fulfilment-providers).",
    )
    coupon_percent: CouponPercent | None = Field(
        default=None, description="coupon only: the code takes this percent off instead."
    )
    active: bool = True


class ItemUpdate(InputModel):
    """Any field; redemptions already made keep what they bought."""

    name: Name | None = None
    points: Points | None = None
    amount: PositiveMoney | None = None
    fulfilment: FulfilmentMethod | None = None
    fulfilment_provider: FulfilmentProvider | None = None
    coupon_percent: CouponPercent | None = None
    active: bool | None = None


class ItemOut(OutputModel):
    id: UUID
    program_id: UUID
    name: str
    points: int
    amount: Decimal
    currency: str
    fulfilment: FulfilmentMethod
    fulfilment_provider: FulfilmentProvider | None
    coupon_percent: Decimal | None
    active: bool
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _display(self) -> Self:
        self.amount = for_display(self.amount, self.currency)
        if self.coupon_percent is not None:
            # 10.00 → 10, 12.50 → 12.5 (normalize alone would write 1E+1).
            plain = self.coupon_percent.normalize()
            self.coupon_percent = (
                plain.quantize(Decimal(1)) if plain == plain.to_integral() else plain
            )
        return self


class RedemptionCreate(InputModel):
    item_id: UUID = Field(description="The catalogue item to spend points on")


class RedemptionOut(OutputModel):
    """The points spent (a negative points entry) and the item's reward, with its delivery."""

    id: UUID
    program_id: UUID
    referrer_id: UUID
    item: ItemOut
    points: int = Field(description="Points spent")
    points_left: int = Field(description="The referrer's spendable points after this")
    debit: RewardOut = Field(description="The negative points entry (entry_type spend)")
    reward: RewardOut = Field(
        description="The item's reward entry: approved, then paid once its provider issued it "
        "(its fulfilment shows the code)."
    )
    created_at: datetime


class MyPoints(OutputModel):
    points: int = Field(description="Spendable points: approved, net of spends and clawbacks")
    items: list[ItemOut] = Field(description="What they can be spent on, cheapest first")
