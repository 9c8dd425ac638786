from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import Field, StringConstraints, model_validator

from app.conversions.models import ConversionStatus
from app.core.money import for_display
from app.core.schemas import (
    AwareDatetime,
    Currency,
    Email,
    ExternalId,
    InputModel,
    Metadata,
    OutputModel,
    PositiveMoney,
)
from app.referrers.schemas import Share
from app.rewards.schemas import RewardOut

EventId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ATTRIBUTION_REASON = (
    "attributed: explicit_code, explicit_click, last_touch or first_touch; unattributed: "
    "self_referral (only the customer's own touches), outside_window (a touch that would have "
    "counted is outside the window), no_eligible_touch (touches that can never count: bots, "
    "after the purchase, unknown, disabled or expired codes), organic (no touch at all)"
)


class ConversionCreate(InputModel):
    program_id: UUID
    event_id: EventId
    customer_id: ExternalId
    amount: PositiveMoney
    currency: Currency
    occurred_at: AwareDatetime | None = None
    code: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    click_id: UUID | None = None
    email: Email | None = None
    metadata: Metadata | None = None


class ConversionOut(OutputModel):
    id: UUID
    program_id: UUID
    event_id: str
    customer_id: str
    amount: Decimal
    currency: str
    occurred_at: datetime
    status: ConversionStatus
    attribution_reason: str = Field(description=ATTRIBUTION_REASON)
    referrer_id: UUID | None
    referral_id: UUID | None
    code: str | None
    click_id: UUID | None
    refunded_amount: Decimal
    metadata: dict[str, Any]
    rewards: list[RewardOut]
    created_at: datetime
    share: Share | None = Field(
        default=None,
        description="In the answer to POST /v1/conversions (and its replays) when the "
        "program enrols buyers (auto_enrol_buyers): the buyer's own code, link, share texts "
        "and QR codes, to show on the order confirmation.",
    )

    @model_validator(mode="after")
    def _display(self) -> Self:
        self.amount = for_display(self.amount, self.currency)
        self.refunded_amount = for_display(self.refunded_amount, self.currency)
        return self


class Candidate(OutputModel):
    """One touch that could have earned the conversion."""

    kind: Literal["code", "click", "redemption"]
    source: Literal["explicit", "customer_history"]
    id: str
    referrer_id: UUID | None
    code: str | None
    occurred_at: datetime | None
    outcome: Literal["won", "lost"]
    reason: str = Field(
        description="won: why it won; lost: outside_window, bot, not_attributable, self_referral, "
        "unknown_code, unknown_click, code_disabled, code_expired, after_conversion, model, "
        "lower_priority"
    )


class Attribution(OutputModel):
    conversion_id: UUID
    status: ConversionStatus
    reason: str = Field(description=ATTRIBUTION_REASON)
    model: str
    window_days: int
    winner: Candidate | None
    candidates: list[Candidate]


class RefundCreate(InputModel):
    amount: PositiveMoney | None = Field(
        default=None, description="Omit for a full refund of what remains."
    )
    refund_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None


class RefundOut(OutputModel):
    id: UUID
    conversion_id: UUID
    refund_id: str | None
    amount: Decimal
    currency: str
    refunded_total: Decimal
    reason: str | None
    created_at: datetime

    @model_validator(mode="after")
    def _display(self) -> Self:
        self.amount = for_display(self.amount, self.currency)
        self.refunded_total = for_display(self.refunded_total, self.currency)
        return self
