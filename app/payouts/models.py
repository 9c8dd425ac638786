from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.conversions.models import MONEY
from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime, utcnow
from app.payouts.states import BatchKind, BatchStatus, LineStatus, PayoutMethod


class Charity(IdMixin, Base):
    """A charity of the program's list: referrers of donation rewards choose one."""

    __tablename__ = "charities"
    __table_args__ = (Index("ix_charities_program_id_created_at", "program_id", "created_at"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    name: Mapped[str] = mapped_column(String(200))
    # The charity's registration number (e.g. a 501(c)(3) EIN), for the donation receipts.
    registration_number: Mapped[str | None] = mapped_column(String(100))
    url: Mapped[str | None] = mapped_column(String(2048))
    # An inactive charity cannot be chosen any more; choices already made stay and are batched.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PayoutBatch(IdMixin, Base):
    """Approved cash (or donation) rewards collected to be paid at once; rewards point at it."""

    __tablename__ = "payout_batches"
    __table_args__ = (Index("ix_payout_batches_program_id_created_at", "program_id", "created_at"),)

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    kind: Mapped[BatchKind] = mapped_column(StrEnumText(BatchKind, 16))
    status: Mapped[BatchStatus] = mapped_column(StrEnumText(BatchStatus, 16))
    currency: Mapped[str] = mapped_column(String(3))
    minimum_amount: Mapped[Decimal | None] = mapped_column(MONEY)
    cutoff: Mapped[datetime | None] = mapped_column(UTCDateTime)
    total: Mapped[Decimal] = mapped_column(MONEY)
    reward_count: Mapped[int] = mapped_column(Integer)
    # The merchant's reference of the payment (a PayPal payout batch id), given at mark-paid.
    reference: Mapped[str | None] = mapped_column(String(200))
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PayoutLine(IdMixin, Base):
    """One referrer's net amount in a batch (their donation receipt line, for a donation batch).

    It holds no payout details: the exports read them from the referrer, so an erased referrer
    leaves no copy here.
    """

    __tablename__ = "payout_lines"
    __table_args__ = (UniqueConstraint("batch_id", "referrer_id"),)

    batch_id: Mapped[UUID] = mapped_column(ForeignKey("payout_batches.id"))
    referrer_id: Mapped[UUID] = mapped_column(ForeignKey("referrers.id"), index=True)
    charity_id: Mapped[UUID | None] = mapped_column(ForeignKey("charities.id"))
    status: Mapped[LineStatus] = mapped_column(StrEnumText(LineStatus, 24))
    # The method at batch time (the details themselves are read at export time).
    payout_method: Mapped[PayoutMethod | None] = mapped_column(StrEnumText(PayoutMethod, 16))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    reward_count: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
