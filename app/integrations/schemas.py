from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from app.core.schemas import InputModel, OutputModel

Provider = Literal["stripe", "shopify"]
SecretText = Annotated[str, StringConstraints(min_length=16, max_length=255, pattern=r"^\S+$")]
Outcome = Literal["recorded", "refunded", "parked", "ignored", "rejected", "duplicate"]


class SecretsCreate(InputModel):
    secrets: Annotated[list[SecretText], Field(min_length=1, max_length=5)] = Field(
        description="Signing secrets (Stripe: whsec_…; Shopify: the app's client secret). "
        "Several may be active at once while one is rotated."
    )


class SecretOut(OutputModel):
    id: UUID
    program_id: UUID
    provider: Provider
    prefix: str = Field(description="The secret's first characters; the rest is never shown.")
    created_at: datetime


class IntegrationEventOut(OutputModel):
    """What became of one platform event."""

    id: UUID
    program_id: UUID
    provider: Provider
    external_id: str = Field(description="Stripe's event id, or Shopify's X-Shopify-Webhook-Id.")
    topic: str
    outcome: Outcome = Field(
        description="recorded (a purchase), refunded, parked (a refund waiting for its "
        "purchase), ignored (nothing to do), rejected (could not be used; see detail), "
        "duplicate (seen before: nothing changed)"
    )
    detail: str | None
    conversion_id: UUID | None
    created_at: datetime
