"""What a referrer session sees of its own referrer: profile, referrals, rewards, standing."""

import unicodedata
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, Field, StringConstraints

from app.core.schemas import OutputModel
from app.payouts.schemas import CharityChoice, PayoutSettings, PayoutSettingsUpdate
from app.referrers.schemas import CodeOut, Share
from app.rewards.states import EntryType, RewardStatus, RuleKind

LEADERBOARD_NAME_MAX = 40


def _printable(value: str) -> str:
    # Control, format (bidirectional overrides, zero-width) and line separator characters
    # would let a name pose as another or break the page it is shown on.
    for char in value:
        category = unicodedata.category(char)
        if category.startswith("C") or category in ("Zl", "Zp"):
            raise ValueError(
                f"a leaderboard name may not contain control or invisible characters "
                f"(U+{ord(char):04X})"
            )
    return value


LeaderboardName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=LEADERBOARD_NAME_MAX),
    AfterValidator(_printable),
]


class MeUpdate(PayoutSettingsUpdate):
    """What a referrer may change about themselves; fields left out stay as they are."""

    leaderboard_name: LeaderboardName | None = Field(
        default=None,
        description="Shown on the program's leaderboard; null clears it (you appear anonymised).",
    )


class MeReferrer(OutputModel):
    id: UUID
    program_id: UUID
    external_id: str
    name: str | None
    leaderboard_name: str | None


class MeProgram(OutputModel):
    name: str
    currency: str
    attribution_window_days: int


class MeOut(OutputModel):
    referrer: MeReferrer
    program: MeProgram
    codes: list[CodeOut]
    share: Share | None = Field(
        description="Texts and share URLs for the code to share (the default code when it is "
        "valid); null when the referrer has no valid code"
    )
    referee_offer: str | None
    payout: PayoutSettings = Field(
        description="Where cash rewards are paid (masked) and the charity donations go to"
    )
    charities: list[CharityChoice] = Field(
        description="The program's charities, to choose from for donation rewards"
    )


class ReferralStatus(StrEnum):
    REDEEMED = "redeemed"
    PURCHASED = "purchased"
    REWARDED = "rewarded"
    REFUNDED = "refunded"
    NOT_COUNTED = "not_counted"


class MeReferral(OutputModel):
    id: UUID
    friend: str = Field(description="A masked email (j***@e***.com), or an anonymous label")
    status: ReferralStatus
    reason: str | None = Field(
        description="Why it is not counted: the attribution's reason code (self_referral, "
        "outside_window, lower_priority, …), or reward_reversed"
    )
    explanation: str
    source: Literal["redemption", "purchase"]
    referred_at: datetime
    purchased_at: datetime | None
    counts_until: datetime | None = Field(
        description="For a redemption without a purchase: a purchase after this does not count"
    )
    created_at: datetime


class MeRewardRule(OutputModel):
    id: UUID
    name: str | None
    version: int


class MeReward(OutputModel):
    id: UUID
    entry_type: EntryType
    kind: RuleKind
    unit: str = Field(description="A currency code, or 'points'")
    amount: Decimal
    status: RewardStatus = Field(
        description="As a read shows it: past its hold, pending is approved"
    )
    why: str
    rule: MeRewardRule | None = Field(description="null for a points redemption's entries")
    referral_id: UUID | None
    hold_until: datetime
    approves_at: datetime | None = Field(description="When a pending reward will be approved")
    approved_at: datetime | None
    paid_at: datetime | None
    reversed_at: datetime | None
    reversed_because: Literal["refund", "merchant"] | None
    created_at: datetime


class TierStep(OutputModel):
    from_referral: int = Field(description="From this successful referral on (1: the base rate)")
    reward: str = Field(description="The reward per referral, for people: $15.00, 10% of the order")
    amount: Decimal | None = None
    percent: Decimal | None = None
    points: int | None = None


class RuleProgress(OutputModel):
    rule_id: UUID
    rule_name: str | None
    rule_version: int
    current: TierStep
    next: TierStep | None
    referrals_needed: int | None = Field(
        description="More successful referrals until the next tier pays (the last of them "
        "is paid at the next tier's rate)"
    )
    rewards_left: int | None = Field(
        description="How many more rewards this rule pays the referrer (its cap); null: no cap"
    )
    sentence: str


class Progress(OutputModel):
    successful_referrals: int = Field(
        description="Referred friends with at least one attributed purchase, as the ledger "
        "counts them for tiers"
    )
    rules: list[RuleProgress]


class LeaderboardEntry(OutputModel):
    rank: int
    name: str = Field(description="The referrer's leaderboard_name, or an anonymous label")
    successful_referrals: int
    is_you: bool


class Leaderboard(OutputModel):
    ranked_by: Literal["successful_referrals"] = "successful_referrals"
    you: LeaderboardEntry
    top: list[LeaderboardEntry]
