from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, UTCDateTime


class Referrer(IdMixin, Base):
    __tablename__ = "referrers"
    __table_args__ = (UniqueConstraint("program_id", "external_id"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # Chosen by the referrer (PATCH /v1/me): shown on the leaderboard only when set.
    leaderboard_name: Mapped[str | None] = mapped_column(String(40))
    # Where cash rewards are paid (app.payouts): stored as given, because paying needs it whole
    # (the payout exports); shown masked in every JSON answer, never logged, never in a webhook
    # payload, cleared by customer erasure.
    payout_method: Mapped[str | None] = mapped_column(String(16))
    payout_recipient: Mapped[str | None] = mapped_column(String(320))
    # The charity of the program's list that the referrer's donation rewards go to.
    # (No foreign key: adding one would make SQLite rebuild the table; app.payouts checks it.)
    charity_id: Mapped[UUID | None] = mapped_column(Uuid)


class Code(IdMixin, Base):
    __tablename__ = "codes"

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"), index=True)
    referrer_id: Mapped[UUID] = mapped_column(ForeignKey("referrers.id"), index=True)
    # As the merchant wrote it; lookups go through the upper-cased `normalized` form.
    code: Mapped[str] = mapped_column(String(64))
    normalized: Mapped[str] = mapped_column(String(64), unique=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    is_vanity: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_redemptions: Mapped[int | None] = mapped_column(Integer)
    redemption_count: Mapped[int] = mapped_column(Integer, default=0)
