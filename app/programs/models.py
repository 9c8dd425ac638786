from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow


class ProgramStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class AttributionModel(StrEnum):
    LAST_TOUCH = "last_touch"
    FIRST_TOUCH = "first_touch"


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
    # Remind referrers whose codes got no click for this many days (None: no reminders).
    reminder_after_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
