from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime

MONEY = Numeric(20, 4)


class ConversionStatus(StrEnum):
    ATTRIBUTED = "attributed"
    UNATTRIBUTED = "unattributed"


class Conversion(IdMixin, Base):
    """A purchase event, attributed or not; idempotent on (program_id, event_id)."""

    __tablename__ = "conversions"
    __table_args__ = (
        UniqueConstraint("program_id", "event_id"),
        Index("ix_conversions_program_id_occurred_at", "program_id", "occurred_at"),
        Index("ix_conversions_program_id_customer_id", "program_id", "customer_id"),
        Index("ix_conversions_referrer_id_occurred_at", "referrer_id", "occurred_at"),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    event_id: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the request body as sent: a retry must match it, another body is a conflict.
    request_hash: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[ConversionStatus] = mapped_column(StrEnumText(ConversionStatus, 16))
    attribution_reason: Mapped[str] = mapped_column(String(32))
    attribution: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    referrer_id: Mapped[UUID | None] = mapped_column(ForeignKey("referrers.id"), index=True)
    code_id: Mapped[UUID | None] = mapped_column(ForeignKey("codes.id"))
    click_id: Mapped[UUID | None] = mapped_column(ForeignKey("clicks.id"))
    referral_id: Mapped[UUID | None] = mapped_column(ForeignKey("referrals.id"), index=True)
    refunded_amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)


class Refund(IdMixin, Base):
    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("conversion_id", "refund_id"),)

    conversion_id: Mapped[UUID] = mapped_column(ForeignKey("conversions.id"), index=True)
    refund_id: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    refunded_total: Mapped[Decimal] = mapped_column(MONEY)
    reason: Mapped[str | None] = mapped_column(String(500))
