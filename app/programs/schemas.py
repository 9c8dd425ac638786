from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field, StringConstraints

from app.core.schemas import Currency, HttpUrl, InputModel, OutputModel
from app.programs.models import AttributionModel, ProgramStatus, RedemptionProof

PROOF_DESCRIPTION = (
    "What a publishable key's redemption must show: `none` (the default), `click_or_token` (a "
    "click_id of a click on the same code, not yet used by another customer, or a "
    "customer_token), `token` (a customer_token). Secret keys are trusted either way."
)
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
AUTO_ENROL_DESCRIPTION = (
    "Every recorded purchase (POST /v1/conversions, Stripe, Shopify) makes its buyer a referrer "
    "of the program (external_id = the customer id) with a code; the purchase's answer then "
    "carries `share`. Off by default."
)
Origin = Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+$", max_length=255)]


class ProgramCreate(InputModel):
    name: Name
    landing_url: HttpUrl
    currency: Currency
    attribution_model: AttributionModel = AttributionModel.LAST_TOUCH
    attribution_window_days: WindowDays = 30
    referee_offer: Annotated[str, Field(max_length=500)] | None = None
    allowed_origins: Annotated[list[Origin], Field(max_length=20)] = []
    redemption_proof: RedemptionProof = Field(
        default=RedemptionProof.NONE, description=PROOF_DESCRIPTION
    )
    reminder_after_days: ReminderDays | None = None
    auto_enrol_buyers: bool = Field(default=False, description=AUTO_ENROL_DESCRIPTION)


class ProgramUpdate(InputModel):
    name: Name | None = None
    landing_url: HttpUrl | None = None
    currency: Currency | None = None
    attribution_model: AttributionModel | None = None
    attribution_window_days: WindowDays | None = None
    status: ProgramStatus | None = None
    referee_offer: Annotated[str, Field(max_length=500)] | None = None
    allowed_origins: Annotated[list[Origin], Field(max_length=20)] | None = None
    redemption_proof: RedemptionProof | None = Field(default=None, description=PROOF_DESCRIPTION)
    reminder_after_days: ReminderDays | None = None
    auto_enrol_buyers: bool | None = Field(default=None, description=AUTO_ENROL_DESCRIPTION)


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
    redemption_proof: RedemptionProof
    reminder_after_days: int | None
    auto_enrol_buyers: bool
    created_at: datetime
    updated_at: datetime


class TokenSecretOut(OutputModel):
    id: UUID
    program_id: UUID
    prefix: str = Field(description="The secret's first characters; the rest is never shown.")
    created_at: datetime


class TokenSecretCreated(TokenSecretOut):
    secret: str = Field(
        description="rcs_ + 43 base64url characters: the HMAC key of customer tokens, "
        "shown this once."
    )
