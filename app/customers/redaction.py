"""Erasure inside stored documents: answers, event payloads and platform events that name a person.

The columns of a person's rows are cleared by name (app.customers.service); copies of those rows
kept as JSON — an Idempotency-Key answer, a webhook event, a parked platform event — are
rewritten by `redact`: the person's id, wherever a field holds a customer id, becomes the
pseudonym; an object about the person loses its email, name and metadata; the person's emails
disappear from any text. Matching is exact (ids, emails ignoring case), so other data stays.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

# Fields that hold a customer's id at the merchant (conversions, referrals, referrers, rewards,
# the purchases mapped from Stripe and Shopify).
ID_FIELDS = frozenset({"customer_id", "external_id", "recipient_id"})
# Personal fields of an object about the person, and what they become.
PERSONAL_FIELDS: dict[str, Any] = {"email": None, "name": None, "metadata": {}}
# Free text that may quote the id (a problem's detail).
TEXT_FIELDS = frozenset({"detail"})
ERASED_TEXT = "[erased]"
# Characters an id is made of: a quoted id is one not touching any of them.
_ID_CHARACTER = r"[A-Za-z0-9._@+\-]"
# Printable ASCII that JSON writes unchanged, whatever its ensure_ascii.
_VERBATIM = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+")


def pseudonym(key: str, customer_id: str, generation: int = 0) -> str:
    """A keyed stand-in (HMAC-SHA256): stable, so counts per customer stay right, and without
    the key an email or id cannot be found again by hashing a list of guesses.

    `generation` > 0 gives another stand-in for a person erased before and back since.
    """
    message = customer_id if generation == 0 else f"{customer_id}\x00{generation}"
    digest = hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()
    return "erased:" + digest[:32]


@dataclass(frozen=True)
class Person:
    """Who is erased: their id, its stand-in, and every email held for them (lower-cased)."""

    customer_id: str
    replacement: str
    emails: frozenset[str] = field(default_factory=frozenset)

    def needles(self) -> list[str | None]:
        """Text each stored copy must contain (lower-cased) to be worth reading; None: any.

        The longest run of the value that JSON writes unchanged, so that a copy is found
        whether the JSON escaped the rest or not.
        """
        found: list[str | None] = []
        for value in (self.customer_id, *sorted(self.emails)):
            runs = _VERBATIM.findall(value)
            found.append(max(runs, key=len).lower() if runs else None)
        return found


def redact(document: Any, person: Person) -> Any:
    """`document` (parsed JSON) without the person; the same value when nothing named them."""
    if isinstance(document, dict):
        about = any(
            key in ID_FIELDS and value == person.customer_id for key, value in document.items()
        )
        redacted: dict[str, Any] = {}
        for key, value in document.items():
            if key in ID_FIELDS and value == person.customer_id:
                redacted[key] = person.replacement
            elif about and key in PERSONAL_FIELDS and value is not None:
                blank = PERSONAL_FIELDS[key]
                redacted[key] = dict(blank) if isinstance(blank, dict) else blank
            elif key in TEXT_FIELDS and isinstance(value, str):
                redacted[key] = _quoted_id_removed(redact_text(value, person), person)
            else:
                redacted[key] = redact(value, person)
        return redacted
    if isinstance(document, list):
        return [redact(item, person) for item in document]
    if isinstance(document, str):
        return redact_text(document, person)
    return document


def redact_text(text: str | None, person: Person) -> str | None:
    """The text without the person's emails (None when it was one of them)."""
    if text is None or not person.emails:
        return text
    if text.lower() in person.emails:
        return None
    for email in person.emails:
        if email in text.lower():
            text = re.sub(re.escape(email), ERASED_TEXT, text, flags=re.IGNORECASE)
    return text


def redact_detail(text: str | None, person: Person) -> str | None:
    """Free text (a platform event's detail): without the emails, and the quoted id replaced."""
    return _quoted_id_removed(redact_text(text, person), person)


def _quoted_id_removed(text: str | None, person: Person) -> str | None:
    if text is None:
        return None
    pattern = rf"(?<!{_ID_CHARACTER}){re.escape(person.customer_id)}(?!{_ID_CHARACTER})"
    return re.sub(pattern, person.replacement, text)
