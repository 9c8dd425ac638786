from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from app.core.schemas import InputModel, OutputModel
from app.emails.models import EmailKind, MessageStatus

Part = Literal["subject", "text", "html"]
Subject = Annotated[str, Field(min_length=1, max_length=500)]
Body = Annotated[str, Field(min_length=1, max_length=20_000)]


class EmailTemplateSet(InputModel):
    """A program's own templates for one email; a part left out keeps the default."""

    subject: Subject | None = None
    text: Body | None = Field(default=None, description="The plain-text body (Jinja2).")
    html: Body | None = Field(
        default=None, description="The HTML body (Jinja2, autoescaped), inside the layout."
    )
    enabled: bool = Field(default=True, description="false: the program sends no such email.")


class EmailPreviewIn(InputModel):
    """Parts to try before saving them; a part left out is the program's current one."""

    subject: Subject | None = None
    text: Body | None = None
    html: Body | None = None


class EmailTemplateOut(OutputModel):
    event: EmailKind
    subject: str
    text: str
    html: str
    enabled: bool
    overridden: list[Part]
    updated_at: datetime | None


class EmailPreviewOut(OutputModel):
    event: EmailKind
    subject: str
    text: str
    html: str


class EmailMessageOut(OutputModel):
    id: UUID
    program_id: UUID
    event: EmailKind
    referrer_id: UUID | None
    recipient: str
    to: str | None = Field(description="The address; null once the person is erased.")
    status: MessageStatus
    attempts: int
    next_attempt_at: datetime
    sent_at: datetime | None
    smtp_status: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime
