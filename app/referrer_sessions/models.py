from datetime import datetime
from enum import StrEnum
from uuid import UUID

from sqlalchemy import ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime


class SessionPurpose(StrEnum):
    """How the token reached the referrer: minted for a widget, or sent in a portal link."""

    SESSION = "session"
    PORTAL_LINK = "portal_link"


class ReferrerSession(IdMixin, Base):
    """A referrer's short-lived access to /v1/me…; the token itself is kept only as a hash."""

    __tablename__ = "referrer_sessions"

    program_id: Mapped[UUID] = mapped_column(ForeignKey("programs.id"))
    referrer_id: Mapped[UUID] = mapped_column(ForeignKey("referrers.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token's first characters, to recognise it in a list without keeping it.
    prefix: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[SessionPurpose] = mapped_column(StrEnumText(SessionPurpose, 16))
    # The API key that minted it (no foreign key: the command line acts without a key row).
    created_by_key_id: Mapped[UUID | None] = mapped_column(Uuid)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
