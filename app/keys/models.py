from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.access import KeyKind
from app.core.db import Base, IdMixin, StrEnumText, UTCDateTime


class ApiKey(IdMixin, Base):
    __tablename__ = "api_keys"

    kind: Mapped[KeyKind] = mapped_column(StrEnumText(KeyKind, 16))
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # None: every program; otherwise the list of program ids (strings) the key may touch.
    program_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
