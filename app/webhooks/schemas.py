from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, field_validator

from app.core.schemas import HttpUrl, InputModel, OutputModel
from app.webhooks.models import DeliveryStatus
from app.webhooks.outbox import EventType

EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=20)]
Description = Annotated[str, Field(max_length=500)]


def _unique(types: list[EventType] | None) -> list[EventType] | None:
    return None if types is None else list(dict.fromkeys(types))


class EndpointCreate(InputModel):
    url: HttpUrl
    event_types: EventTypes
    description: Description | None = None
    program_id: UUID | None = Field(
        default=None,
        description="Only this program's events; omit for every program (keys for all programs).",
    )
    enabled: bool = True

    _dedupe = field_validator("event_types")(_unique)


class EndpointUpdate(InputModel):
    url: HttpUrl | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None

    _dedupe = field_validator("event_types")(_unique)


class EndpointOut(OutputModel):
    id: UUID
    program_id: UUID | None
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(
        description="whsec_ + base64: the Standard Webhooks signing secret, shown this once."
    )


class AttemptOut(OutputModel):
    id: UUID
    created_at: datetime
    response_status: int | None
    response_excerpt: str | None
    error: str | None
    duration_ms: int


class DeliveryOut(OutputModel):
    id: UUID
    endpoint_id: UUID
    event_id: UUID
    webhook_id: str = Field(description="The webhook-id header: the same on every retry.")
    event_type: str
    object_id: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    response_status: int | None
    response_excerpt: str | None
    error: str | None
    delivered_at: datetime | None
    redelivery_of: UUID | None
    created_at: datetime
    payload: dict[str, Any]
    attempts: list[AttemptOut]
