from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field, StringConstraints

from app.core.schemas import Email, ExternalId, HttpUrl, InputModel, OutputModel

CodeText = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Utm = Annotated[str, StringConstraints(max_length=200)]


class ClickCreate(InputModel):
    code: CodeText
    landing_url: HttpUrl | None = None
    referring_url: HttpUrl | None = None
    utm_source: Utm | None = None
    utm_medium: Utm | None = None
    utm_campaign: Utm | None = None
    visitor_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class ClickOut(OutputModel):
    click_id: UUID
    program_id: UUID
    code: str
    attributable: bool
    is_bot: bool
    is_duplicate: bool
    occurred_at: datetime


class RedemptionCreate(InputModel):
    code: CodeText
    customer_id: ExternalId
    email: Email | None = None
    click_id: UUID | None = None
    customer_token: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="rct1.<expires>.<signature>: the merchant's backend vouches for customer_id "
        "(README: customer tokens). Checked whenever given; required by programs whose "
        "redemption_proof asks for it.",
    )


class RedemptionOut(OutputModel):
    referral_id: UUID
    program_id: UUID
    referrer_id: UUID
    code: str
    customer_id: str
    click_id: UUID | None
    created_at: datetime
