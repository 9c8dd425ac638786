from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field, StringConstraints

from app.core.schemas import Currency, HttpUrl, InputModel, OutputModel
from app.programs.models import AttributionModel, ProgramStatus

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
WindowDays = Annotated[int, Field(ge=1, le=365)]
ReminderDays = Annotated[
    int,
    Field(
        ge=1,
        le=365,
        description="Email referrers whose codes got no click for this many days; null: never.",
    ),
]
Origin = Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+$", max_length=255)]


class ProgramCreate(InputModel):
    name: Name
    landing_url: HttpUrl
    currency: Currency
    attribution_model: AttributionModel = AttributionModel.LAST_TOUCH
    attribution_window_days: WindowDays = 30
    referee_offer: Annotated[str, Field(max_length=500)] | None = None
    allowed_origins: Annotated[list[Origin], Field(max_length=20)] = []
    reminder_after_days: ReminderDays | None = None


class ProgramUpdate(InputModel):
    name: Name | None = None
    landing_url: HttpUrl | None = None
    currency: Currency | None = None
    attribution_model: AttributionModel | None = None
    attribution_window_days: WindowDays | None = None
    status: ProgramStatus | None = None
    referee_offer: Annotated[str, Field(max_length=500)] | None = None
    allowed_origins: Annotated[list[Origin], Field(max_length=20)] | None = None
    reminder_after_days: ReminderDays | None = None


class ProgramOut(OutputModel):
    id: UUID
    name: str
    landing_url: str
    currency: str
    attribution_model: AttributionModel
    attribution_window_days: int
    status: ProgramStatus
    referee_offer: str | None
    allowed_origins: list[str]
    reminder_after_days: int | None
    created_at: datetime
    updated_at: datetime
