from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, UTCDateTime, utcnow


class IntegrationSecret(IdMixin, Base):
    """A signing secret of a program's Stripe or Shopify webhooks; several at once for rotation."""

    __tablename__ = "integration_secrets"
    __table_args__ = (UniqueConstraint("program_id", "provider", "secret"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    provider: Mapped[str] = mapped_column(String(16))  # stripe / shopify
    # Stored as given: checking an HMAC needs the plain secret, and there is no KMS to wrap it.
    secret: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))


class IntegrationEvent(IdMixin, Base):
    """Each verified platform event, once: dedupes redeliveries and parks early refunds."""

    __tablename__ = "integration_events"
    __table_args__ = (
        UniqueConstraint("program_id", "provider", "external_id"),
        Index(
            "ix_integration_events_program_id_provider_awaiting",
            "program_id",
            "provider",
            "awaiting",
        ),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    provider: Mapped[str] = mapped_column(String(16))
    # Stripe's event id, or Shopify's X-Shopify-Webhook-Id.
    external_id: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(100))
    # recorded / refunded / parked / ignored / rejected
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(500))
    conversion_id: Mapped[UUID | None] = mapped_column(ForeignKey("conversions.id"), index=True)
    # A parked refund: the platform reference of the purchase it waits for.
    awaiting: Mapped[str | None] = mapped_column(String(255))
    # The mapped event, kept while it is parked or when it was rejected.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IntegrationReference(IdMixin, Base):
    """A platform id (checkout session, payment intent, invoice, order) of a recorded purchase."""

    __tablename__ = "integration_references"
    __table_args__ = (UniqueConstraint("program_id", "provider", "reference"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    provider: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(255))
    conversion_id: Mapped[UUID] = mapped_column(ForeignKey("conversions.id"), index=True)
