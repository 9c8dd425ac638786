from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, UTCDateTime


class IdempotencyRecord(IdMixin, Base):
    """The stored answer to a POST sent with an Idempotency-Key, per API key, for replays."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal_hash", "idempotency_key"),)

    # SHA-256 of the id of the API key that authenticated the request: keys are scoped per caller.
    principal_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(2048))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    response_content_type: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
