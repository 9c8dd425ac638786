from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.conversions.models import MONEY
from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow
from app.fulfilment.states import FulfilmentStatus
from app.rewards.states import FulfilmentMethod, FulfilmentProvider


class FulfilmentCredential(IdMixin, Base):
    """A program's account at a provider: what the dispatcher calls it with. One per provider."""

    __tablename__ = "fulfilment_credentials"
    __table_args__ = (UniqueConstraint("program_id", "provider"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    provider: Mapped[FulfilmentProvider] = mapped_column(StrEnumText(FulfilmentProvider, 16))
    shop_domain: Mapped[str | None] = mapped_column(String(255))  # shopify
    url: Mapped[str | None] = mapped_column(String(2048))  # webhook
    # Stored as given (the Admin API token, the Stripe secret key, the whsec_ signing secret):
    # calling the provider needs the plain value, and there is no KMS to wrap it.
    secret: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Fulfilment(IdMixin, Base):
    """Delivering one reward: the outbox job and, once issued, what the provider made.

    Written with the reward (waiting while it is held) and released in the approval's
    transaction; claimed by app.fulfilment.dispatcher. `code` is chosen when the row is
    written and never changes, so every attempt asks the provider for the same code.
    """

    __tablename__ = "fulfilments"
    __table_args__ = (
        Index("ix_fulfilments_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_fulfilments_program_id_created_at", "program_id", "created_at"),
        Index("ix_fulfilments_code", "code"),
        Index("ix_fulfilments_program_id_fulfilled_at", "program_id", "fulfilled_at"),
        Index("ix_fulfilments_reference", "reference"),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    reward_id: Mapped[UUID] = mapped_column(ForeignKey("rewards.id"), unique=True)
    method: Mapped[FulfilmentMethod] = mapped_column(StrEnumText(FulfilmentMethod, 16))
    provider: Mapped[FulfilmentProvider] = mapped_column(StrEnumText(FulfilmentProvider, 16))
    status: Mapped[FulfilmentStatus] = mapped_column(StrEnumText(FulfilmentStatus, 16))
    code: Mapped[str | None] = mapped_column(String(64))
    # A percent-off coupon (the rule's coupon_percent); otherwise `amount` off or credited.
    percent_off: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    # Fixed at the first attempt, so that every retry asks for exactly the same thing.
    amount: Mapped[Decimal | None] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    # The provider's id of what it made: discount node, promotion code, gift card, transaction.
    reference: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Set while an attempt is out: still set at the next claim means its outcome is unknown.
    in_flight: Mapped[bool] = mapped_column(Boolean, default=False)
    # The retry window runs from here (released, retried by hand, or clawed back).
    due_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(String(500))
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An order (Shopify) or checkout (Stripe) used the coupon: the true cost of the reward is
    # the discount it took (`redeemed_amount`, in `currency`), app.fulfilment.redeemed.
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    redeemed_amount: Mapped[Decimal | None] = mapped_column(MONEY)
    redeemed_order: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
