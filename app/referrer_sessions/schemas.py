from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field

from app.core.schemas import InputModel, OutputModel
from app.referrer_sessions.models import SessionPurpose

# The bounds a caller may ask for; the settings may narrow the upper one.
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 30 * 86400


class SessionCreate(InputModel):
    ttl_seconds: (
        Annotated[
            int,
            Field(
                ge=MIN_TTL_SECONDS,
                le=MAX_TTL_SECONDS,
                description="Lifetime of the token; the default is REFERRAL_REFERRER_SESSION_"
                "TTL_SECONDS (portal links: …_PORTAL_LINK_TTL_SECONDS), at most "
                "REFERRAL_REFERRER_SESSION_MAX_TTL_SECONDS.",
            ),
        ]
        | None
    ) = None


class SessionOut(OutputModel):
    session_id: UUID
    referrer_id: UUID
    program_id: UUID
    purpose: SessionPurpose
    prefix: str
    expires_at: datetime
    revoked_at: datetime | None
    created_at: datetime


class SessionCreated(SessionOut):
    token: str = Field(
        description="The bearer token for /v1/me…; shown this once, stored only as a hash."
    )


class PortalLink(SessionCreated):
    url: str = Field(
        description="The portal URL with the token in its fragment (#token=…), so that it never "
        "reaches a server log."
    )


class SessionsRevoked(OutputModel):
    referrer_id: UUID
    revoked: int = Field(description="How many live sessions were revoked by this call")
