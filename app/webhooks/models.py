from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookEndpoint(IdMixin, Base):
    """A merchant's URL that receives the event types it subscribed to, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    # None: events of every program (only keys not limited to programs may register one).
    program_id: Mapped[UUID | None] = mapped_column(ForeignKey("programs.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500))
    event_types: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Kept as issued (whsec_ + base64): signing needs the plain key, and there is no KMS here.
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEvent(IdMixin, Base):
    """The outbox: one row per event, written in the same transaction as the change."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_program_id_created_at", "program_id", "created_at"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    event_type: Mapped[str] = mapped_column(String(40))
    # The object the event is about: its deliveries to one endpoint go out in order.
    object_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class WebhookDelivery(IdMixin, Base):
    """One event for one endpoint: pending until a 2xx (succeeded) or the retry window ends."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index(
            "ix_webhook_deliveries_endpoint_id_object_id",
            "endpoint_id",
            "object_id",
            "ordered_at",
        ),
        Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    event_id: Mapped[UUID] = mapped_column(ForeignKey("webhook_events.id"), index=True)
    endpoint_id: Mapped[UUID] = mapped_column(ForeignKey("webhook_endpoints.id"))
    object_id: Mapped[str] = mapped_column(String(64))
    # The event's time (a redelivery's own): a delivery waits for earlier ones of its object.
    ordered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[DeliveryStatus] = mapped_column(
        StrEnumText(DeliveryStatus, 16), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    redelivery_of: Mapped[UUID | None] = mapped_column(ForeignKey("webhook_deliveries.id"))


class WebhookAttempt(IdMixin, Base):
    """One HTTP attempt of a delivery and what the endpoint answered."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[UUID] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(200))
    duration_ms: Mapped[int] = mapped_column(Integer)
