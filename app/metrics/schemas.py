from datetime import datetime
from decimal import Decimal
from typing import Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from app.core.schemas import OutputModel
from app.rewards.schemas import Balance

ReferrerOrder = Literal["conversions", "revenue", "referrals", "clicks"]
CohortKind = Literal["referred", "unattributed"]

RATE = "Decimal string rounded half-even to 4 places; null when the denominator is 0"


class RangeOut(OutputModel):
    """The range the numbers cover: `[from, to)`, UTC."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    range_from: datetime = Field(alias="from")
    range_to: datetime = Field(alias="to")


class Funnel(OutputModel):
    """The measures of one slice; see app.metrics.service for the exact definitions."""

    clicks: int
    unique_clicks: int = Field(description="Clicks neither bot nor duplicate")
    referrals: int
    converted_referrals: int = Field(description="Referrals with an attributed conversion")
    conversions: int = Field(description="Attributed conversions")
    revenue: Decimal = Field(description="Attributed revenue, net of refunds")
    reward_cost: Decimal = Field(description="Pending, approved and paid rewards in the currency")
    reward_points: int = Field(description="Pending, approved and paid points rewards")
    conversion_rate: Decimal | None = Field(description=f"conversions ÷ unique clicks; {RATE}")
    referral_rate: Decimal | None = Field(description=f"referrals ÷ unique clicks; {RATE}")
    referral_purchase_rate: Decimal | None = Field(
        description=f"converted referrals ÷ referrals; {RATE}"
    )
    average_order_value: Decimal | None = Field(
        description="revenue ÷ conversions, at the currency's minor unit; null without conversions"
    )
    revenue_per_reward_spent: Decimal | None = Field(description=f"revenue ÷ reward cost; {RATE}")


class TrueRewardCost(OutputModel):
    """Coupons issued in the range and what the orders that used them took off
    (app.metrics.reward_cost has the definitions)."""

    reward_cost_issued: Decimal = Field(
        description="Face value of the coupons issued at their provider in the range"
    )
    reward_cost_redeemed: Decimal = Field(
        description="What the orders that used those coupons took off (the true cost)"
    )
    reward_breakage: Decimal = Field(description="issued - redeemed: promised, never spent")
    reward_redemption_rate: Decimal | None = Field(description=f"redeemed ÷ issued; {RATE}")


class Summary(RangeOut, Funnel, TrueRewardCost):
    program_id: UUID
    currency: str


class TimeseriesBucket(Funnel):
    label: str = Field(description="The local period: YYYY-MM-DD (day, week's Monday) or YYYY-MM")
    start: datetime = Field(description="Bucket start in the asked zone, clipped to the range")
    end: datetime = Field(description="Bucket end (exclusive) in the asked zone, clipped")
    partial: bool = Field(
        description="The range starts or ends inside this period, so the bucket covers only "
        "part of the day, week or month its label names (the first and last buckets only)"
    )


class Timeseries(RangeOut):
    program_id: UUID
    currency: str
    interval: Literal["day", "week", "month"]
    tz: str
    buckets: list[TimeseriesBucket]


class ReferrerRow(Funnel):
    referrer_id: UUID
    external_id: str
    name: str | None


class Leaderboard(RangeOut):
    program_id: UUID
    currency: str
    order_by: ReferrerOrder
    limit: int
    data: list[ReferrerRow]


class ChannelRow(Funnel):
    utm_source: str = Field(description="'direct' when the click had none (or there was no click)")
    utm_medium: str
    utm_campaign: str


class Channels(RangeOut):
    program_id: UUID
    currency: str
    limit: int
    data: list[ChannelRow]


class RewardTotals(OutputModel):
    """Rewards tied to the referrer whose conversion occurred in the range, by status."""

    recipient: Literal["referrer", "referee"]
    unit: str = Field(description="A currency code, or 'points'")
    pending: Decimal
    approved: Decimal
    paid: Decimal
    reversed: Decimal


class ReferrerMetrics(RangeOut):
    referrer_id: UUID
    program_id: UUID
    external_id: str
    currency: str
    funnel: Funnel
    rewards: list[RewardTotals]
    balance: Balance = Field(description="The referrer's balance now, over all time")


class CohortPeriod(OutputModel):
    month_offset: int = Field(description="0: the cohort's own month, 1: the month after, …")
    purchases: int
    revenue: Decimal = Field(description="Net of refunds")
    cumulative_revenue: Decimal
    cumulative_revenue_per_customer: Decimal | None = Field(
        description="Lifetime value to date: cumulative revenue ÷ customers of the cohort"
    )


class Cohort(OutputModel):
    kind: CohortKind
    month: str = Field(description="YYYY-MM in the asked zone")
    customers: int
    periods: list[CohortPeriod]


class Cohorts(RangeOut):
    program_id: UUID
    currency: str
    by: Literal["month"]
    tz: str
    cohorts: list[Cohort]
