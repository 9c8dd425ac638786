from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, UTCDateTime, utcnow


class Program(IdMixin, Base):
    __tablename__ = "programs"

    name: Mapped[str] = mapped_column(String(200))
    landing_url: Mapped[str] = mapped_column(String(2048))
    attribution_model: Mapped[str] = mapped_column(String(16), default="last_touch")
    attribution_window_days: Mapped[int] = mapped_column(Integer, default=30)
    status: Mapped[str] = mapped_column(String(16), default="active")
    currency: Mapped[str] = mapped_column(String(3))
    referee_offer: Mapped[str | None] = mapped_column(Text)
    allowed_origins: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
