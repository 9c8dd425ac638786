from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
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
    # What a publishable key's redemption must show: none / click_or_token / token.
    redemption_proof: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CustomerTokenSecret(IdMixin, Base):
    """A program's key for customer tokens (app.programs.tokens); two at once for rotation."""

    __tablename__ = "customer_token_secrets"

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"), index=True)
    # Stored as made: checking an HMAC needs the plain secret, and there is no KMS to wrap it.
    secret: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
