"""What an email links to, and the variables its templates get at send time."""

from typing import Any
from uuid import UUID

from app.core.config import Settings
from app.emails.tokens import unsubscribe_token
from app.programs.models import Program
from app.qr.service import placement_link, qr_url


def unsubscribe_link(settings: Settings, program_id: UUID, digest: str) -> tuple[str, str]:
    """The one-click unsubscribe URL of an address in a program, and its token."""
    token = unsubscribe_token(settings.email_secret.get_secret_value(), program_id, digest)
    return f"{settings.public_base_url.rstrip('/')}/unsubscribe?token={token}", token


def render_context(
    settings: Settings, program: Program, stored: dict[str, Any], unsubscribe_url: str
) -> dict[str, Any]:
    """The stored context of a message, with the program and the links as they are now.

    The share link is the plain `/r/{code}` (the referrer passes it on through any channel);
    the QR image is the `email` placement's.
    """
    code = stored.get("code")
    context = {
        "program": {"name": program.name, "referee_offer": program.referee_offer},
        "recipient": stored.get("recipient") or {"name": None},
        "code": code,
        "link": placement_link(settings, code, None) if code else None,
        "qr_url": qr_url(settings, code, "email") if code else None,
        "unsubscribe_url": unsubscribe_url,
    }
    for optional in ("reward", "days", "fulfilment"):
        if optional in stored:
            context[optional] = stored[optional]
    return context
