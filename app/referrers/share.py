"""Share texts per channel for one code: the one builder behind /v1/me, the answers to
auto-enrolled buyers (app.referrers.enrolment) and the `referrer.enrolled` event.

Each channel gets its own link (`utm_source=<channel>`, `utm_medium=share`), so the channels
report shows where referrals come from. The QR code URLs point at the service's own
`/v1/codes/{code}/qr.svg|png` (app.qr), one per placement. The words come from
`templates_for(program)`: the defaults today, a program's own texts once programs can set them,
with no caller changing.
"""

import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from app.core.config import Settings
from app.programs.models import Program
from app.referrers.schemas import EmailShare, LinkShare, MessageShare, QrCodes, QrUrls, Share

SHARE_MEDIUM = "share"
# The placements of app.qr.service (which imports this domain, so it cannot be imported here;
# tests/test_post_purchase.py checks that QrCodes names the same ones).
_PLACEHOLDER = re.compile(r"\{(offer|link|code)\}")


@dataclass(frozen=True)
class ShareTemplates:
    """The words of every channel; `{offer}`, `{link}` and `{code}` are filled in."""

    email_subject: str
    email_body: str
    message: str  # WhatsApp and SMS
    post: str  # X


WITH_OFFER = ShareTemplates(
    email_subject="{offer}, with my invite",
    email_body=(
        "Hi,\n\nI shop here and think you would like it too. With my link you get {offer}:\n"
        "{link}\n\nOr enter my code {code} at checkout.\n"
    ),
    message="With my link you get {offer}: {link}",
    post="{offer} with my invite: {link}",
)
WITHOUT_OFFER = ShareTemplates(
    email_subject="My invite for you",
    email_body=(
        "Hi,\n\nI shop here and think you would like it too. Have a look:\n{link}\n\n"
        "Or enter my code {code} at checkout.\n"
    ),
    message="Have a look, I think you would like it: {link}",
    post="I think you would like this: {link}",
)


def templates_for(program: Program) -> ShareTemplates:
    """The program's share texts. Per-program texts, once a program can set them, are read
    here, so that every caller of `share_for` keeps working unchanged."""
    return WITH_OFFER if program.referee_offer else WITHOUT_OFFER


def referral_link(settings: Settings, code: str, channel: str | None = None) -> str:
    """`…/r/{code}` on REFERRAL_PUBLIC_BASE_URL, marked with the channel it is shared on."""
    link = f"{settings.public_base_url.rstrip('/')}/r/{quote(code, safe='')}"
    if channel is None:
        return link
    return f"{link}?{urlencode({'utm_source': channel, 'utm_medium': SHARE_MEDIUM})}"


def qr_codes(settings: Settings, code: str) -> QrCodes:
    """The URLs of the code's QR images: the plain link and one per placement."""
    base = f"{settings.public_base_url.rstrip('/')}/v1/codes/{quote(code, safe='')}/qr"

    def urls(placement: str | None) -> QrUrls:
        query = f"?{urlencode({'placement': placement})}" if placement else ""
        return QrUrls(svg=f"{base}.svg{query}", png=f"{base}.png{query}")

    return QrCodes(
        plain=urls(None),
        packaging=urls("packaging"),
        invoice=urls("invoice"),
        receipt=urls("receipt"),
        email=urls("email"),
    )


def _fill(template: str, values: dict[str, str]) -> str:
    # One pass of plain replacement, not str.format: an offer that contains "{link}" stays
    # as written, and a program's own template can never reach an attribute.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _encoded(value: str) -> str:
    return quote(value, safe="")


def share_for(program: Program, code: str, settings: Settings) -> Share:
    """The texts and share URLs of every channel for `code` of `program`."""
    templates = templates_for(program)
    offer = program.referee_offer or ""

    def text(template: str, channel: str) -> str:
        return _fill(
            template, {"offer": offer, "code": code, "link": referral_link(settings, code, channel)}
        )

    def message(template: str, channel: str, url: str) -> MessageShare:
        filled = text(template, channel)
        return MessageShare(
            text=filled,
            link=referral_link(settings, code, channel),
            share_url=url + _encoded(filled),
        )

    subject = text(templates.email_subject, "email")
    body = text(templates.email_body, "email")
    facebook = referral_link(settings, code, "facebook")
    linkedin = referral_link(settings, code, "linkedin")
    return Share(
        code=code,
        link=referral_link(settings, code),
        offer=program.referee_offer,
        email=EmailShare(
            subject=subject,
            body=body,
            link=referral_link(settings, code, "email"),
            share_url=f"mailto:?subject={_encoded(subject)}&body={_encoded(body)}",
        ),
        whatsapp=message(templates.message, "whatsapp", "https://wa.me/?text="),
        x=message(templates.post, "x", "https://twitter.com/intent/tweet?text="),
        facebook=LinkShare(
            link=facebook,
            share_url=f"https://www.facebook.com/sharer/sharer.php?u={_encoded(facebook)}",
        ),
        linkedin=LinkShare(
            link=linkedin,
            share_url=f"https://www.linkedin.com/sharing/share-offsite/?url={_encoded(linkedin)}",
        ),
        # "sms:?&body=" is the form both iOS and Android open with the body filled in.
        sms=message(templates.message, "sms", "sms:?&body="),
        qr=qr_codes(settings, code),
    )
