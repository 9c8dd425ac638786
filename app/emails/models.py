from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow


class EmailKind(StrEnum):
    """The lifecycle emails, each with its default templates (app/emails/templates)."""

    ENROLLED = "enrolled"
    REFERRAL_REDEEMED = "referral_redeemed"
    REWARD_EARNED = "reward_earned"
    REWARD_APPROVED = "reward_approved"
    REWARD_PAID = "reward_paid"
    REWARD_FULFILLED = "reward_fulfilled"
    REMINDER = "reminder"


class MessageStatus(StrEnum):
    PENDING = "pending"  # queued, or waiting for its next attempt
    SENDING = "sending"  # an SMTP exchange is under way
    SENT = "sent"  # the server accepted it
    FAILED = "failed"  # refused for good, or the retry window ended
    UNKNOWN = "unknown"  # interrupted after the server may have taken it: never sent again
    SUPPRESSED = "suppressed"  # unsubscribed, erased, or this email turned off: not sent


class EmailMessage(IdMixin, Base):
    """The email outbox: one row per (event, recipient, kind), written with the event."""

    __tablename__ = "email_messages"
    __table_args__ = (
        Index("ix_email_messages_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_email_messages_program_id_created_at", "program_id", "created_at"),
        Index("ix_email_messages_referrer_id_kind_created_at", "referrer_id", "kind", "created_at"),
        Index("ix_email_messages_program_id_address_hash", "program_id", "address_hash"),
    )

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    kind: Mapped[EmailKind] = mapped_column(StrEnumText(EmailKind, 32))
    # "{kind}:{object}:{recipient}": the same event never queues the same email twice.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    # The referrer the email is about (a referee's reward names its referrer).
    referrer_id: Mapped[UUID | None] = mapped_column(ForeignKey("referrers.id"))
    recipient: Mapped[str] = mapped_column(String(16))  # "referrer" or "referee"
    # Cleared when the person is erased; address_hash (SHA-256) stays for the suppression.
    to_address: Mapped[str | None] = mapped_column(String(320))
    address_hash: Mapped[str] = mapped_column(String(64))
    # What the templates are rendered with at send time (names, code, amounts).
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[MessageStatus] = mapped_column(
        StrEnumText(MessageStatus, 16), default=MessageStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sending_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    smtp_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailSuppression(IdMixin, Base):
    """An address that gets no email of the program again: unsubscribed, or erased."""

    __tablename__ = "email_suppressions"
    __table_args__ = (UniqueConstraint("program_id", "address_hash"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    address_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))  # "unsubscribed" or "erased"


class EmailTemplate(IdMixin, Base):
    """A program's own subject and bodies for one kind of email; a None part is the default."""

    __tablename__ = "email_templates"
    __table_args__ = (UniqueConstraint("program_id", "kind"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    kind: Mapped[EmailKind] = mapped_column(StrEnumText(EmailKind, 32))
    subject: Mapped[str | None] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
