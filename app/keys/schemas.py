from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field

from app.core.access import KeyKind
from app.core.schemas import InputModel, OutputModel


class ApiKeyCreate(InputModel):
    kind: KeyKind
    name: Annotated[str, Field(max_length=200)] | None = None
    program_ids: Annotated[list[UUID], Field(min_length=1, max_length=100)] | None = None


class ApiKeyOut(OutputModel):
    id: UUID
    kind: KeyKind
    name: str | None
    prefix: str
    program_ids: list[UUID] | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself; it is shown this once and never again.")
