from datetime import datetime
from uuid import UUID

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, UTCDateTime, utcnow


class Click(IdMixin, Base):
    """One visit through a code; its `id` is the public `click_id`."""

    __tablename__ = "clicks"
    __table_args__ = (
        Index("ix_clicks_code_id_occurred_at", "code_id", "occurred_at"),
        Index("ix_clicks_program_id_occurred_at", "program_id", "occurred_at"),
        Index("ix_clicks_program_id_customer_id", "program_id", "customer_id"),
        # Covering (migration 0012): a referrer's raw clicks in a range, from the index alone.
        Index(
            "ix_clicks_referrer_id_occurred_at",
            "referrer_id",
            "occurred_at",
            postgresql_include=["program_id", "is_bot", "is_duplicate"],
        ),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    code_id: Mapped[UUID] = mapped_column(ForeignKey("codes.id"))
    referrer_id: Mapped[UUID] = mapped_column(ForeignKey("referrers.id"), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(8))  # "link" or "api"
    landing_url: Mapped[str | None] = mapped_column(String(2048))
    referring_url: Mapped[str | None] = mapped_column(String(2048))
    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))
    visitor_id: Mapped[str | None] = mapped_column(String(200))
    ip_hash: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(1024))
    is_bot: Mapped[bool] = mapped_column(Boolean, default=False)
    is_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    # False when the code was disabled or expired: the visit counts, nobody earns from it.
    attributable: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when a redemption or purchase names this click: the touch belongs to that customer.
    customer_id: Mapped[str | None] = mapped_column(String(200))


class ClickClaim(Base):
    """Which click on a code holds a visitor's uniqueness, and until when the visitor is "seen".

    One row per code and visitor key: `kind` "visitor" (the widget's visitor id) or "ip" (the
    IP hash). A click is unique when each of its keys has no row, or one whose `seen_until` (its
    latest click + the duplicate window) has passed; every click moves `seen_until` on. Decided
    by one INSERT … ON CONFLICT DO UPDATE … RETURNING (app.tracking.click_writer), so that two
    workers or replicas never both take a key as new. Rows whose window has passed are pruned.
    No foreign keys: claims are bookkeeping of the hot path, and a click row is written after
    its claim in the same transaction.
    """

    __tablename__ = "click_claims"

    code_id: Mapped[UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    claimed_by: Mapped[UUID]  # the unique click (all zeros: claimed from before migration 0008)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_until: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Referral(IdMixin, Base):
    """A referred customer (referee) tied to a referrer; one per program and customer."""

    __tablename__ = "referrals"
    __table_args__ = (
        UniqueConstraint("program_id", "customer_id"),
        Index("ix_referrals_program_id_occurred_at", "program_id", "occurred_at"),
        Index("ix_referrals_referrer_id_occurred_at", "referrer_id", "occurred_at"),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    referrer_id: Mapped[UUID] = mapped_column(ForeignKey("referrers.id"), index=True)
    code_id: Mapped[UUID] = mapped_column(ForeignKey("codes.id"), index=True)
    click_id: Mapped[UUID | None] = mapped_column(ForeignKey("clicks.id"))
    customer_id: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    source: Mapped[str] = mapped_column(String(16))  # "redemption" or "conversion"
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
