from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.conversions.models import MONEY
from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow
from app.rewards.states import (
    EntryType,
    FulfilmentMethod,
    FulfilmentProvider,
    Recipient,
    RewardStatus,
    RuleKind,
    Trigger,
)


class RewardRule(IdMixin, Base):
    """How conversions pay; every change makes a new version, and rewards keep the version."""

    __tablename__ = "reward_rules"

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    name: Mapped[str | None] = mapped_column(String(200))
    recipient: Mapped[Recipient] = mapped_column(StrEnumText(Recipient, 16))
    kind: Mapped[RuleKind] = mapped_column(StrEnumText(RuleKind, 16))
    amount: Mapped[Decimal | None] = mapped_column(MONEY)
    percent: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))
    points: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    trigger: Mapped[Trigger] = mapped_column(StrEnumText(Trigger, 16))
    min_order_amount: Mapped[Decimal | None] = mapped_column(MONEY)
    tiers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    max_rewards_per_referrer: Mapped[int | None] = mapped_column(Integer)
    hold_days: Mapped[int] = mapped_column(Integer, default=0)
    # How approved rewards are delivered (app.fulfilment), and by which configured provider.
    fulfilment: Mapped[FulfilmentMethod] = mapped_column(
        StrEnumText(FulfilmentMethod, 16), default=FulfilmentMethod.LEDGER, server_default="ledger"
    )
    fulfilment_provider: Mapped[FulfilmentProvider | None] = mapped_column(
        StrEnumText(FulfilmentProvider, 16)
    )
    # A coupon of this percent off (the recipient's next order) instead of the reward's amount.
    coupon_percent: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(frozen=True, slots=True)
class ActiveRule:
    """One version of an active rule as the purchase path applies it: plain values, shared
    between sessions by the in-process cache (app/rewards/rules.py `rules_for`)."""

    id: UUID
    program_id: UUID
    version: int
    recipient: Recipient
    kind: RuleKind
    amount: Decimal | None
    percent: Decimal | None
    points: int | None
    trigger: Trigger
    min_order_amount: Decimal | None
    tiers: tuple[dict[str, Any], ...]
    max_rewards_per_referrer: int | None
    hold_days: int
    fulfilment: FulfilmentMethod
    fulfilment_provider: FulfilmentProvider | None
    coupon_percent: Decimal | None

    @classmethod
    def of(cls, rule: RewardRule) -> "ActiveRule":
        values = {field.name: getattr(rule, field.name) for field in fields(cls)}
        values["tiers"] = tuple(dict(tier) for tier in rule.tiers or ())
        return cls(**values)


class RewardRuleVersion(IdMixin, Base):
    """The rule as it was at each version: what paid a reward can always be looked up."""

    __tablename__ = "reward_rule_versions"
    __table_args__ = (UniqueConstraint("rule_id", "version"),)

    rule_id: Mapped[UUID] = mapped_column(ForeignKey("reward_rules.id"))
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)


class Reward(IdMixin, Base):
    """A ledger entry. Never deleted: reversed, or offset by a negative clawback entry."""

    __tablename__ = "rewards"
    __table_args__ = (
        Index("ix_rewards_program_id_created_at", "program_id", "created_at"),
        Index("ix_rewards_status_hold_until", "status", "hold_until"),
        Index("ix_rewards_rule_id_referrer_id", "rule_id", "referrer_id"),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    # Null for the entries of a points redemption (app.points): no purchase and no rule paid them.
    conversion_id: Mapped[UUID | None] = mapped_column(ForeignKey("conversions.id"), index=True)
    rule_id: Mapped[UUID | None] = mapped_column(ForeignKey("reward_rules.id"))
    rule_version: Mapped[int | None] = mapped_column(Integer)
    referrer_id: Mapped[UUID] = mapped_column(ForeignKey("referrers.id"), index=True)
    recipient: Mapped[Recipient] = mapped_column(StrEnumText(Recipient, 16))
    # The recipient's id at the merchant: the referrer's external_id or the referee's customer_id.
    recipient_id: Mapped[str] = mapped_column(String(200))
    entry_type: Mapped[EntryType] = mapped_column(
        StrEnumText(EntryType, 16), default=EntryType.REWARD
    )
    adjusts_reward_id: Mapped[UUID | None] = mapped_column(ForeignKey("rewards.id"), index=True)
    kind: Mapped[RuleKind] = mapped_column(StrEnumText(RuleKind, 16))
    # The paying rule version's method: batches find cash and donations by it.
    fulfilment_method: Mapped[FulfilmentMethod] = mapped_column(
        StrEnumText(FulfilmentMethod, 16), default=FulfilmentMethod.LEDGER, server_default="ledger"
    )
    unit: Mapped[str] = mapped_column(String(8))  # a currency code, or "points"
    amount: Mapped[Decimal] = mapped_column(MONEY)
    original_amount: Mapped[Decimal] = mapped_column(MONEY)
    status: Mapped[RewardStatus] = mapped_column(StrEnumText(RewardStatus, 16))
    hold_until: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payout_reference: Mapped[str | None] = mapped_column(String(200))
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reversal_reason: Mapped[str | None] = mapped_column(String(500))
    # The payout or donation batch (app.payouts) that holds or paid this entry: one at most.
    # (No foreign key: adding one would make SQLite rebuild the ledger's table.)
    payout_batch_id: Mapped[UUID | None] = mapped_column(Uuid, index=True)
