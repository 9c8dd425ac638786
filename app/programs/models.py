from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow


class ProgramStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class AttributionModel(StrEnum):
    LAST_TOUCH = "last_touch"
    FIRST_TOUCH = "first_touch"


class RedemptionProof(StrEnum):
    """What a publishable key's redemption must show (app.tracking.service)."""

    NONE = "none"
    CLICK_OR_TOKEN = "click_or_token"
    TOKEN = "token"


class Program(IdMixin, Base):
    __tablename__ = "programs"

    name: Mapped[str] = mapped_column(String(200))
    landing_url: Mapped[str] = mapped_column(String(2048))
    attribution_model: Mapped[AttributionModel] = mapped_column(
        StrEnumText(AttributionModel, 16), default=AttributionModel.LAST_TOUCH
    )
    attribution_window_days: Mapped[int] = mapped_column(Integer, default=30)
    status: Mapped[ProgramStatus] = mapped_column(
        StrEnumText(ProgramStatus, 16), default=ProgramStatus.ACTIVE
    )
    currency: Mapped[str] = mapped_column(String(3))
    referee_offer: Mapped[str | None] = mapped_column(Text)
    allowed_origins: Mapped[list[Any]] = mapped_column(JSON, default=list)
    redemption_proof: Mapped[RedemptionProof] = mapped_column(
        StrEnumText(RedemptionProof, 16), default=RedemptionProof.NONE, server_default="none"
    )
    # Remind referrers whose codes got no click for this many days (None: no reminders).
    reminder_after_days: Mapped[int | None] = mapped_column(Integer)
    # Every recorded purchase makes its buyer a referrer (app.referrers.enrolment).
    auto_enrol_buyers: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CustomerTokenSecret(IdMixin, Base):
    """A program's key for customer tokens (app.programs.tokens); two at once for rotation."""

    __tablename__ = "customer_token_secrets"

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"), index=True)
    # Stored as made: checking an HMAC needs the plain secret, and there is no KMS to wrap it.
    secret: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
