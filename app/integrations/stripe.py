"""Stripe webhooks: the `Stripe-Signature` check and the events that become conversions.

- `checkout.session.completed` (and `checkout.session.async_payment_succeeded` for delayed
  payment methods) and `invoice.paid` → a conversion. Its event_id is the Stripe object id;
  a checkout that made an invoice (subscriptions, invoice_creation) uses the invoice id, so
  that the matching `invoice.paid` is the same purchase, not a second one.
- Only paid money counts, as for Shopify: a checkout whose payment_status is not `paid` (a
  delayed payment method, `unpaid` until it settles) is ignored until
  `checkout.session.async_payment_succeeded`; `async_payment_failed` records nothing.
- `charge.refunded` → a refund of what `amount_refunded` (cumulative) adds to what is
  already refunded, found through the payment intent, invoice or charge id.
- Every other type is acknowledged and ignored.

A promotion code this service minted (a coupon reward) that a paid checkout or invoice used
marks that coupon redeemed (app.fulfilment.redeemed): found by its id, which Stripe always
sends, with what it took off from `total_details`.

The referral code is the first of metadata.referral_code, client_reference_id and the
promotion code used that is a code of the program. Stripe sends promotion codes as ids unless
expanded, so the code's text is only seen when the object carries it expanded.
"""

import hmac
from datetime import UTC, datetime
from decimal import Decimal
from hashlib import sha256
from typing import Any
from uuid import UUID

from app.core.money import is_currency, minor_unit
from app.fulfilment.redeemed import UsedDiscount
from app.integrations.service import (
    InvalidSignature,
    Mapped,
    PlatformPurchase,
    PlatformRefund,
    Skipped,
)

SCHEME = "v1"
PURCHASE_TYPES = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
# Stripe writes these amounts with two decimals although the ISO currency has none.
TWO_DECIMAL_AT_STRIPE = {"ISK"}


def verify_signature(
    body: bytes, header: str | None, secrets: list[str], now: float, tolerance: int
) -> None:
    """InvalidSignature unless one `v1` signature of the header matches one of the secrets.

    The signed text is f"{t}.{raw body}" (HMAC-SHA256, hex); `t` must be within `tolerance`
    seconds of now, so a captured request cannot be replayed later.
    """
    if not header:
        raise InvalidSignature("The Stripe-Signature header is missing.")
    timestamp: str | None = None
    signatures: list[bytes] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == SCHEME:
            signatures.append(value.encode("latin-1", errors="replace"))
    if timestamp is None or not timestamp.isdigit() or not signatures:
        raise InvalidSignature("The Stripe-Signature header has no timestamp or no v1 signature.")
    signed = timestamp.encode() + b"." + body
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, sha256).hexdigest().encode()
        for signature in signatures:
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise InvalidSignature("The signature matches none of the program's Stripe secrets.")
    if abs(now - int(timestamp)) > tolerance:
        raise InvalidSignature(f"The signature is more than {tolerance} seconds old (or ahead).")


def map_event(event: dict[str, Any]) -> Mapped:
    """What the event means for the program; malformed content is `rejected`."""
    event_type = str(event.get("type", ""))
    try:
        obj = event["data"]["object"]
        occurred_at = datetime.fromtimestamp(int(event["created"]), UTC)
        if event_type in PURCHASE_TYPES:
            return _checkout_session(obj, occurred_at)
        if event_type == "invoice.paid":
            return _invoice(obj, occurred_at)
        if event_type == "charge.refunded":
            return _charge_refunded(obj)
        if event_type == "checkout.session.async_payment_failed":
            return Skipped("ignored", "the delayed payment failed: the checkout earns nothing")
    except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as exc:
        return Skipped("rejected", f"the {event_type} event lacks what is needed: {exc!r}")
    return Skipped("ignored", f"{event_type or 'this event type'} is not used")


def from_minor_units(amount: Any, currency: str) -> Decimal:
    exponent = 2 if currency in TWO_DECIMAL_AT_STRIPE else minor_unit(currency)
    value = Decimal(int(amount)).scaleb(-exponent)
    return value.quantize(Decimal(1).scaleb(-minor_unit(currency)))


def _currency(obj: dict[str, Any]) -> str:
    currency = str(obj["currency"]).upper()
    if not is_currency(currency):
        raise ValueError(f"unknown currency {currency}")
    return currency


def _id(value: Any) -> str | None:
    """An id whether Stripe sent it as a string or as an expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _metadata(obj: Any) -> dict[str, Any]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _promotion_codes(*discount_lists: Any) -> list[str]:
    """The text of the promotion codes used, where Stripe sent them expanded."""
    codes: list[str] = []
    for discounts in discount_lists:
        for discount in discounts if isinstance(discounts, list) else [discounts]:
            if not isinstance(discount, dict):
                continue
            inner = discount["discount"] if isinstance(discount.get("discount"), dict) else {}
            for promotion in (discount.get("promotion_code"), inner.get("promotion_code")):
                if isinstance(promotion, dict) and _text(promotion.get("code")):
                    codes.append(str(promotion["code"]).strip())
    return codes


def _used(discounts: Any, breakdown: Any, discounted: Any, currency: str) -> list[UsedDiscount]:
    """The promotion codes a checkout or invoice used (their ids; their text if expanded),
    each with what it took off: from the expanded breakdown, else the total discount when
    only one discount was applied."""
    used: list[UsedDiscount] = []
    for line in breakdown if isinstance(breakdown, list) else []:
        if not isinstance(line, dict) or not isinstance(line.get("discount"), dict):
            continue
        promotion = line["discount"].get("promotion_code")
        amount = line.get("amount")
        used.append(
            UsedDiscount(
                code=_text(promotion.get("code")) if isinstance(promotion, dict) else None,
                reference=_id(promotion),
                amount=from_minor_units(amount, currency) if isinstance(amount, int) else None,
            )
        )
    if used:
        return used
    given = [d for d in (discounts if isinstance(discounts, list) else [discounts]) if d]
    for discount in given:
        if not isinstance(discount, dict):
            continue
        inner = discount["discount"] if isinstance(discount.get("discount"), dict) else {}
        promotion = discount.get("promotion_code") or inner.get("promotion_code")
        if promotion is None:
            continue
        amount = discounted if len(given) == 1 and isinstance(discounted, int) else None
        used.append(
            UsedDiscount(
                code=_text(promotion.get("code")) if isinstance(promotion, dict) else None,
                reference=_id(promotion),
                amount=from_minor_units(amount, currency) if amount is not None else None,
            )
        )
    return used


def _click_id(*candidates: Any) -> UUID | None:
    for candidate in candidates:
        if isinstance(candidate, str):
            try:
                return UUID(candidate)
            except ValueError:
                continue
    return None


def _codes(*candidates: Any) -> list[str]:
    return [text for text in (_text(c) for c in candidates) if text is not None]


def _checkout_session(session: dict[str, Any], occurred_at: datetime) -> Mapped:
    # "unpaid": a delayed method (bank debit, voucher) that async_payment_succeeded completes.
    status = session["payment_status"]
    if status != "paid":
        return Skipped(
            "ignored",
            f"the checkout is {status}, not paid: "
            "it earns when it is paid (checkout.session.async_payment_succeeded)",
        )
    currency = _currency(session)
    metadata = _metadata(session)
    details = session.get("customer_details") or {}
    invoice = _id(session.get("invoice"))
    payment_intent = _id(session.get("payment_intent"))
    email = _text(details.get("email")) or _text(session.get("customer_email"))
    total_details = session.get("total_details") or {}
    breakdown = total_details.get("breakdown") or {}
    return PlatformPurchase(
        event_id=invoice or str(session["id"]),
        customer_id=_text(metadata.get("customer_id")) or _id(session.get("customer")) or email,
        email=email.lower() if email else None,
        amount=from_minor_units(session["amount_total"], currency),
        currency=currency,
        occurred_at=occurred_at,
        codes=_codes(metadata.get("referral_code"), session.get("client_reference_id"))
        + _promotion_codes(session.get("discounts"), breakdown.get("discounts")),
        click_id=_click_id(metadata.get("click_id"), session.get("client_reference_id")),
        references=[ref for ref in (str(session["id"]), payment_intent, invoice) if ref],
        metadata={
            "source": "stripe",
            "stripe_checkout_session": str(session["id"]),
            "stripe_payment_intent": payment_intent,
            "stripe_invoice": invoice,
        },
        discounts=_used(
            session.get("discounts"),
            breakdown.get("discounts"),
            total_details.get("amount_discount"),
            currency,
        ),
    )


def _invoice(invoice: dict[str, Any], occurred_at: datetime) -> Mapped:
    currency = _currency(invoice)
    metadata = _metadata(invoice)
    parent: dict[str, Any] = invoice.get("parent") or {}
    subscription_metadata = _metadata(invoice.get("subscription_details")) or _metadata(
        parent.get("subscription_details")
    )
    payment_intent = _id(invoice.get("payment_intent"))
    charge = _id(invoice.get("charge"))
    paid_through = [
        _id((payment.get("payment") or {}).get(kind))
        for payment in (invoice.get("payments") or {}).get("data", [])
        if isinstance(payment, dict)
        for kind in ("payment_intent", "charge")
    ]
    email = _text(invoice.get("customer_email"))
    return PlatformPurchase(
        event_id=str(invoice["id"]),
        customer_id=_text(metadata.get("customer_id"))
        or _text(subscription_metadata.get("customer_id"))
        or _id(invoice.get("customer"))
        or email,
        email=email.lower() if email else None,
        amount=from_minor_units(invoice["amount_paid"], currency),
        currency=currency,
        occurred_at=occurred_at,
        codes=_codes(metadata.get("referral_code"), subscription_metadata.get("referral_code"))
        + _promotion_codes(invoice.get("discount"), invoice.get("discounts")),
        click_id=_click_id(metadata.get("click_id"), subscription_metadata.get("click_id")),
        references=list(
            dict.fromkeys(
                ref for ref in (str(invoice["id"]), payment_intent, charge, *paid_through) if ref
            )
        ),
        metadata={
            "source": "stripe",
            "stripe_invoice": str(invoice["id"]),
            "stripe_payment_intent": payment_intent,
            "stripe_subscription": _id(invoice.get("subscription"))
            or _id((parent.get("subscription_details") or {}).get("subscription")),
        },
        discounts=_used(
            invoice.get("discounts") or invoice.get("discount"),
            None,
            _total_discount(invoice.get("total_discount_amounts")),
            currency,
        ),
    )


def _total_discount(amounts: Any) -> int | None:
    lines = [line.get("amount") for line in amounts or [] if isinstance(line, dict)]
    whole = [amount for amount in lines if isinstance(amount, int)]
    return sum(whole) if whole and len(whole) == len(lines) else None


def _charge_refunded(charge: dict[str, Any]) -> Mapped:
    currency = _currency(charge)
    refunds = (charge.get("refunds") or {}).get("data") or []
    latest = _id(refunds[0]) if refunds else None
    refunded = int(charge["amount_refunded"])
    references = [
        ref
        for ref in (
            _id(charge.get("payment_intent")),
            _id(charge.get("invoice")),
            str(charge["id"]),
        )
        if ref
    ]
    reason = refunds[0].get("reason") if refunds and isinstance(refunds[0], dict) else None
    return PlatformRefund(
        # Without the refunds list (newer API versions) the total names the refund.
        refund_id=latest or f"{charge['id']}:{refunded}",
        references=references,
        currency=currency,
        refunded_total=from_minor_units(refunded, currency),
        reason=f"stripe: {reason}" if reason else "stripe: charge.refunded",
    )
