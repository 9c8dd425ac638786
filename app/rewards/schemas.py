from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self
from uuid import UUID

from pydantic import Field, model_validator

from app.core.money import for_display
from app.core.schemas import Currency, InputModel, OutputModel, PositiveMoney
from app.rewards.states import (
    EntryType,
    FulfilmentMethod,
    FulfilmentProvider,
    Recipient,
    RewardStatus,
    RuleKind,
    Trigger,
)

Percent = Annotated[Decimal, Field(gt=0, le=100, decimal_places=4)]
Points = Annotated[int, Field(gt=0, le=100_000_000)]
# Checked against what the providers can express by app.fulfilment.jobs (a stable 422 code).
CouponPercent = Annotated[Decimal, Field(max_digits=9, decimal_places=4)]


class Tier(InputModel):
    """From the referrer's `from_referral`-th successful referral on, pay this value instead."""

    from_referral: Annotated[int, Field(ge=2, le=1_000_000)]
    amount: PositiveMoney | None = None
    percent: Percent | None = None
    points: Points | None = None


class RuleValues(InputModel):
    kind: RuleKind
    amount: PositiveMoney | None = None
    currency: Currency | None = None
    percent: Percent | None = None
    points: Points | None = None
    tiers: Annotated[list[Tier], Field(max_length=20)] = []

    @model_validator(mode="after")
    def _value_matches_kind(self) -> Self:
        check_value(self.kind, self.amount, self.percent, self.points, "rule")
        for tier in self.tiers:
            check_value(self.kind, tier.amount, tier.percent, tier.points, "tier")
        starts = [tier.from_referral for tier in self.tiers]
        if len(set(starts)) != len(starts):
            raise ValueError("two tiers start at the same referral")
        return self


def check_value(
    kind: str, amount: Decimal | None, percent: Decimal | None, points: int | None, what: str
) -> None:
    given = {"amount": amount, "percent": percent, "points": points}
    wanted = {"fixed": "amount", "percent": "percent", "points": "points"}[kind]
    if given[wanted] is None:
        raise ValueError(f"a {kind} {what} needs {wanted}")
    extra = [name for name, value in given.items() if value is not None and name != wanted]
    if extra:
        raise ValueError(f"a {kind} {what} takes {wanted}, not {', '.join(extra)}")


class RuleCreate(RuleValues):
    name: Annotated[str, Field(max_length=200)] | None = None
    recipient: Recipient
    trigger: Trigger = Trigger.FIRST_PURCHASE
    min_order_amount: PositiveMoney | None = None
    max_rewards_per_referrer: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    hold_days: Annotated[int, Field(ge=0, le=365)] = 0
    fulfilment: FulfilmentMethod = Field(
        default=FulfilmentMethod.LEDGER,
        description="How approved rewards are delivered: ledger (by hand), coupon, "
        "store_credit, gift_card (issued by fulfilment_provider), cash or donation (batches).",
    )
    fulfilment_provider: FulfilmentProvider | None = Field(
        default=None,
        description="Who issues coupon, store_credit and gift_card rewards; the program must "
        "have its credentials (POST /v1/programs/{id}/fulfilment-providers).",
    )
    coupon_percent: CouponPercent | None = Field(
        default=None,
        description="coupon only: the code takes this percent off instead of the reward's "
        "amount; the ledger still books the reward's value.",
    )

    @model_validator(mode="after")
    def _tiers_for_referrers(self) -> Self:
        if self.tiers and self.recipient != Recipient.REFERRER:
            raise ValueError("tiers count a referrer's successful referrals: referrer rules only")
        return self


class RuleUpdate(InputModel):
    """Any field of the rule; the change makes a new version that pays later conversions."""

    name: Annotated[str, Field(max_length=200)] | None = None
    active: bool | None = None
    recipient: Recipient | None = None
    kind: RuleKind | None = None
    amount: PositiveMoney | None = None
    currency: Currency | None = None
    percent: Percent | None = None
    points: Points | None = None
    trigger: Trigger | None = None
    min_order_amount: PositiveMoney | None = None
    max_rewards_per_referrer: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    hold_days: Annotated[int, Field(ge=0, le=365)] | None = None
    tiers: Annotated[list[Tier], Field(max_length=20)] | None = None
    fulfilment: FulfilmentMethod | None = None
    fulfilment_provider: FulfilmentProvider | None = None
    coupon_percent: CouponPercent | None = None


class TierOut(OutputModel):
    from_referral: int
    amount: Decimal | None = None
    percent: Decimal | None = None
    points: int | None = None


class RuleOut(OutputModel):
    id: UUID
    program_id: UUID
    version: int
    active: bool
    name: str | None
    recipient: Recipient
    kind: RuleKind
    amount: Decimal | None
    currency: str | None
    percent: Decimal | None
    points: int | None
    trigger: Trigger
    min_order_amount: Decimal | None
    tiers: list[TierOut]
    max_rewards_per_referrer: int | None
    hold_days: int
    fulfilment: FulfilmentMethod
    fulfilment_provider: FulfilmentProvider | None
    coupon_percent: Decimal | None
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _display(self) -> Self:
        if self.coupon_percent is not None:
            self.coupon_percent = _plain(self.coupon_percent)
        if self.currency:
            if self.amount is not None:
                self.amount = for_display(self.amount, self.currency)
            if self.min_order_amount is not None:
                self.min_order_amount = for_display(self.min_order_amount, self.currency)
            for tier in self.tiers:
                if tier.amount is not None:
                    tier.amount = for_display(tier.amount, self.currency)
        if self.percent is not None:
            self.percent = _plain(self.percent)
        return self


def _plain(value: Decimal) -> Decimal:
    """10.0000 → 10, 12.5000 → 12.5."""
    normalized = value.normalize()
    return normalized.quantize(Decimal(1)) if normalized == normalized.to_integral() else normalized


class FulfilmentBrief(OutputModel):
    """How a reward paid through a provider is being delivered (app.fulfilment)."""

    id: UUID
    method: FulfilmentMethod
    provider: FulfilmentProvider
    status: str = Field(
        description="waiting (held), pending, fulfilled, failed, cancelled, revoking, revoked, "
        "kept (clawed back but used or not revocable), revoke_failed"
    )
    code: str | None = Field(description="The coupon or gift card code, once issued.")
    reference: str | None = Field(description="The provider's id of what it issued.")
    error: str | None


class RewardOut(OutputModel):
    id: UUID
    program_id: UUID
    conversion_id: UUID | None = Field(
        description="The purchase that paid it; null for the entries of a points redemption."
    )
    rule_id: UUID | None = Field(description="null for the entries of a points redemption")
    rule_version: int | None
    referrer_id: UUID
    recipient: Recipient
    recipient_id: str
    entry_type: EntryType
    adjusts_reward_id: UUID | None
    kind: RuleKind
    fulfilment_method: FulfilmentMethod
    unit: str = Field(description="A currency code, or 'points'")
    amount: Decimal
    original_amount: Decimal
    status: RewardStatus
    hold_until: datetime
    approved_at: datetime | None
    paid_at: datetime | None
    payout_reference: str | None
    payout_batch_id: UUID | None = Field(
        default=None, description="The payout or donation batch that holds or paid the entry"
    )
    reversed_at: datetime | None
    reversal_reason: str | None
    created_at: datetime
    fulfilment: FulfilmentBrief | None = Field(
        default=None,
        description="The delivery by a provider (coupon, store credit, gift card); null for "
        "other methods. Events other than reward.fulfilled and reward.fulfilment_failed "
        "leave it null.",
    )

    @model_validator(mode="after")
    def _display(self) -> Self:
        self.amount = for_display(self.amount, self.unit)
        self.original_amount = for_display(self.original_amount, self.unit)
        return self


class MarkPaid(InputModel):
    payout_reference: Annotated[str, Field(max_length=200)] | None = None


class Reverse(InputModel):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class BalanceLine(OutputModel):
    unit: str
    pending: Decimal
    approved: Decimal
    paid: Decimal
    owed: Decimal = Field(description="pending + approved: earned and not yet paid")
    payable: Decimal = Field(description="approved: due for payout now")


class Balance(OutputModel):
    referrer_id: UUID
    balances: list[BalanceLine]
