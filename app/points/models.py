from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from app.conversions.models import MONEY
from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow
from app.rewards.states import FulfilmentMethod, FulfilmentProvider


class PointsItem(IdMixin, Base):
    """Something a program's referrers may spend points on: `points` buy a reward of `amount`
    in the program's currency, delivered like a rule's rewards (`fulfilment`, its provider,
    an optional coupon percent). Never deleted once redeemed: deactivated."""

    __tablename__ = "points_items"

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    points: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(MONEY)
    fulfilment: Mapped[FulfilmentMethod] = mapped_column(StrEnumText(FulfilmentMethod, 16))
    fulfilment_provider: Mapped[FulfilmentProvider | None] = mapped_column(
        StrEnumText(FulfilmentProvider, 16)
    )
    coupon_percent: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointsRedemption(IdMixin, Base):
    """A referrer spent points on an item: the negative points entry that took them (`debit`)
    and the reward entry that delivers the item (fulfilled like any reward), both in the
    ledger, written in one transaction."""

    __tablename__ = "points_redemptions"
    __table_args__ = (
        Index("ix_points_redemptions_referrer_id_created_at", "referrer_id", "created_at"),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    referrer_id: Mapped[UUID] = mapped_column(ForeignKey("referrers.id"))
    item_id: Mapped[UUID] = mapped_column(ForeignKey("points_items.id"), index=True)
    points: Mapped[int] = mapped_column(Integer)
    debit_id: Mapped[UUID] = mapped_column(ForeignKey("rewards.id"), unique=True)
    reward_id: Mapped[UUID] = mapped_column(ForeignKey("rewards.id"), unique=True)
