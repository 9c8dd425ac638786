from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, Field, StringConstraints

from app.core.schemas import AwareDatetime, Email, ExternalId, InputModel, Metadata, OutputModel
from app.programs.schemas import AttributionModel

VanityCode = Annotated[
    str,
    StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$"),
]
CodeState = Literal["valid", "disabled", "expired", "exhausted", "program_not_active"]


def _in_utc(value: datetime) -> datetime:
    # 9999-12-31T23:00-05:00 is a valid datetime that has no UTC equivalent to store.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


ExpiresAt = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class ReferrerUpsert(InputModel):
    external_id: ExternalId
    email: Email | None = None
    name: Annotated[str, Field(max_length=200)] | None = None
    metadata: Metadata | None = None


class CodeCreate(InputModel):
    code: VanityCode | None = Field(
        default=None, description="A vanity code; omit it for a random one."
    )
    expires_at: ExpiresAt | None = None
    max_redemptions: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


class CodeUpdate(InputModel):
    disabled: bool | None = None
    expires_at: ExpiresAt | None = None
    max_redemptions: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


class CodeOut(OutputModel):
    code: str
    program_id: UUID
    referrer_id: UUID
    is_default: bool
    is_vanity: bool
    disabled: bool
    expires_at: datetime | None
    max_redemptions: int | None
    redemption_count: int
    state: CodeState
    link: str
    created_at: datetime


class CodeLookup(OutputModel):
    """What a storefront widget may see of a code."""

    code: str
    valid: bool
    state: CodeState
    program_name: str
    referee_offer: str | None
    # The storefront snippet keeps a code as long as the program attributes it, by its model.
    attribution_model: AttributionModel
    attribution_window_days: int


class ReferrerOut(OutputModel):
    id: UUID
    program_id: UUID
    external_id: str
    email: str | None
    name: str | None
    metadata: dict[str, Any]
    default_code: CodeOut | None
    created_at: datetime


class EmailShare(OutputModel):
    subject: str
    body: str
    link: str = Field(description="The referral link, marked utm_source=email")
    share_url: str = Field(description="A mailto: URL that opens the mail app with the text")


class MessageShare(OutputModel):
    text: str = Field(description="The message, with the link in it")
    link: str = Field(description="The referral link, marked with this channel as utm_source")
    share_url: str = Field(description="Opens the channel's composer with the text")


class LinkShare(OutputModel):
    link: str = Field(description="The referral link, marked with this channel as utm_source")
    share_url: str = Field(description="The channel's share dialog (it takes only a URL)")


class QrUrls(OutputModel):
    svg: str = Field(description="GET /v1/codes/{code}/qr.svg for this placement")
    png: str = Field(description="GET /v1/codes/{code}/qr.png for this placement")


class QrCodes(OutputModel):
    """Where the QR images of the code are served, per placement (their links carry it as
    utm_source); `plain` is the bare link, for a screen."""

    plain: QrUrls
    packaging: QrUrls
    invoice: QrUrls
    receipt: QrUrls
    email: QrUrls


class Share(OutputModel):
    """Ready-made texts and share URLs, per channel, for one code, and its QR codes."""

    code: str
    link: str
    offer: str | None = Field(description="What the referee gets (the program's referee_offer)")
    email: EmailShare
    whatsapp: MessageShare
    x: MessageShare
    facebook: LinkShare
    linkedin: LinkShare
    sms: MessageShare
    qr: QrCodes
