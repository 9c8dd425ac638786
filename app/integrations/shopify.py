"""Shopify webhooks: the `X-Shopify-Hmac-Sha256` check and the topics that become conversions.

- `orders/paid`, and `orders/create` / `orders/updated` of an order whose financial_status says
  its money was captured (`paid`, or `partially_refunded` / `refunded` for one paid earlier) →
  a conversion: total_price in the shop currency, the customer's id (or the order's email), and
  the referral code from the discount codes, a `referral_code` note attribute, or the `ref` the
  referral link put on the landing page URL. Every topic of one order maps to the same
  event_id, so the order is one purchase however many of them arrive. An order that is
  `pending` (cash on delivery, bank transfer), `authorized` (not captured yet),
  `partially_paid`, `voided` or `expired` earns nothing: it is recorded when it is paid.
- `orders/cancelled`, or any order topic whose order has `cancelled_at`, → a full refund of
  what is not refunded yet, once per order (its refund_id is the order's), parked like any
  refund when the purchase is not recorded yet, so a cancelled order never earns.
- A discount code this service minted (a coupon reward) that a paid order used marks that
  coupon redeemed, with the amount it took off (app.fulfilment.redeemed).
- `refunds/create` → a refund of the successful refund transactions, found by order id.
- Other topics are acknowledged and ignored. Redeliveries carry the same
  X-Shopify-Webhook-Id and are answered `duplicate`.
"""

import base64
import hmac
from datetime import datetime
from decimal import Decimal, InvalidOperation
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

from app.core.money import is_currency, quantize
from app.fulfilment.redeemed import UsedDiscount
from app.integrations.service import (
    InvalidSignature,
    Mapped,
    PlatformPurchase,
    PlatformRefund,
    Skipped,
)

CODE_ATTRIBUTES = ("referral_code", "ref")
CLICK_ATTRIBUTES = ("click_id", "referral_click_id")
ORDER_TOPICS = ("orders/create", "orders/updated", "orders/paid", "orders/cancelled")
# An order whose money was captured; refunds since then arrive as refunds/create.
PAID_STATUSES = frozenset({"paid", "partially_refunded", "refunded"})


def verify_signature(body: bytes, header: str | None, secrets: list[str]) -> None:
    """InvalidSignature unless the header is the base64 HMAC-SHA256 of the raw body by a secret."""
    if not header:
        raise InvalidSignature("The X-Shopify-Hmac-Sha256 header is missing.")
    given = header.strip().encode("latin-1", errors="replace")
    matched = False
    for secret in secrets:
        expected = base64.b64encode(hmac.new(secret.encode(), body, sha256).digest())
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise InvalidSignature("The signature matches none of the program's Shopify secrets.")


def map_event(topic: str, payload: dict[str, Any]) -> Mapped:
    try:
        if topic in ORDER_TOPICS:
            return _order(topic, payload)
        if topic == "refunds/create":
            return _refund(payload)
    except (KeyError, TypeError, ValueError, ArithmeticError, InvalidOperation) as exc:
        return Skipped("rejected", f"the {topic} payload lacks what is needed: {exc!r}")
    return Skipped("ignored", f"{topic or 'this topic'} is not used")


def _text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _attributes(order: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for attribute in order.get("note_attributes") or []:
        if (
            isinstance(attribute, dict)
            and _text(attribute.get("name"))
            and _text(attribute.get("value"))
        ):
            found.setdefault(
                str(attribute["name"]).strip().lower(), str(attribute["value"]).strip()
            )
    return found


def _landing_params(order: dict[str, Any]) -> dict[str, str]:
    landing = order.get("landing_site")
    if not isinstance(landing, str) or not landing:
        return {}
    return {key: values[0] for key, values in parse_qs(urlsplit(landing).query).items() if values}


def _money(value: Any, currency: str | None) -> Decimal:
    """Shopify's decimal string; trailing zeros past the currency's minor unit are dropped."""
    amount = Decimal(str(value))
    if currency is None or not is_currency(currency):
        return amount
    rounded = quantize(amount, currency)
    return rounded if rounded == amount else amount


def _uuid(*candidates: str | None) -> UUID | None:
    for candidate in candidates:
        if candidate:
            try:
                return UUID(candidate)
            except ValueError:
                continue
    return None


def _order_gid(order: dict[str, Any], order_id: str) -> str:
    return _text(order.get("admin_graphql_api_id")) or f"gid://shopify/Order/{order_id}"


def _order(topic: str, order: dict[str, Any]) -> Mapped:
    order_id = _text(order["id"])
    if order_id is None:
        raise ValueError("the order has no id")
    currency = str(order["currency"]).upper()
    if not is_currency(currency):
        raise ValueError(f"unknown currency {currency}")
    if topic == "orders/cancelled" or _text(order.get("cancelled_at")):
        return _cancellation(order, order_id, currency)
    status = _text(order["financial_status"])
    if status not in PAID_STATUSES:
        return Skipped(
            "ignored",
            f"the order is {status or 'without a financial status'}, not paid: "
            "it earns when it is paid (orders/paid)",
        )
    customer: dict[str, Any] = order["customer"] if isinstance(order.get("customer"), dict) else {}
    email = (
        _text(order.get("email"))
        or _text(order.get("contact_email"))
        or _text(customer.get("email"))
    )
    attributes = _attributes(order)
    landing = _landing_params(order)
    discount_codes = [
        str(discount["code"]).strip()
        for discount in order.get("discount_codes") or []
        if isinstance(discount, dict) and _text(discount.get("code"))
    ]
    codes = [
        *discount_codes,
        *(attributes[name] for name in CODE_ATTRIBUTES if name in attributes),
        *([landing["ref"]] if landing.get("ref") else []),
    ]
    used = [
        UsedDiscount(
            code=str(discount["code"]).strip(), amount=_discount_amount(discount, currency)
        )
        for discount in order.get("discount_codes") or []
        if isinstance(discount, dict) and _text(discount.get("code"))
    ]
    occurred = _text(order.get("processed_at")) or _text(order.get("created_at"))
    return PlatformPurchase(
        event_id=_order_gid(order, order_id),
        customer_id=_text(customer.get("id")) or email,
        email=email.lower() if email else None,
        amount=_money(order["total_price"], currency),
        currency=currency,
        occurred_at=datetime.fromisoformat(occurred) if occurred else None,
        codes=codes,
        click_id=_uuid(
            *(attributes.get(name) for name in CLICK_ATTRIBUTES), landing.get("click_id")
        ),
        references=[order_id],
        metadata={
            "source": "shopify",
            "shopify_order_id": order_id,
            "shopify_order_name": _text(order.get("name")),
        },
        discounts=used,
    )


def _discount_amount(discount: dict[str, Any], currency: str) -> Decimal | None:
    """What a discount code took off (`amount`, in the shop currency); None if unreadable."""
    try:
        return _money(discount.get("amount"), currency)
    except (ValueError, InvalidOperation, TypeError):
        return None


def _cancellation(order: dict[str, Any], order_id: str, currency: str) -> Mapped:
    """A cancelled order gives back all that is left of it, whatever was refunded before."""
    reason = _text(order.get("cancel_reason"))
    return PlatformRefund(
        # One per order: orders/cancelled and an orders/updated of the cancelled order agree.
        refund_id=f"{_order_gid(order, order_id)}/cancellation",
        references=[order_id],
        currency=currency,
        remainder=True,
        reason=f"shopify: order cancelled ({reason})" if reason else "shopify: order cancelled",
    )


def _refund(refund: dict[str, Any]) -> Mapped:
    refund_id = _text(refund["id"])
    order_id = _text(refund["order_id"])
    if refund_id is None or order_id is None:
        raise ValueError("the refund has no id or order_id")
    transactions = [
        transaction
        for transaction in refund.get("transactions") or []
        if isinstance(transaction, dict)
        and transaction.get("kind") == "refund"
        and transaction.get("status") == "success"
    ]
    if not transactions:
        return Skipped("ignored", "no money was refunded (no successful refund transaction)")
    currencies = {str(t.get("currency") or "").upper() for t in transactions} - {""}
    if len(currencies) > 1:
        raise ValueError(f"refund transactions in several currencies: {sorted(currencies)}")
    currency = currencies.pop() if currencies else None
    return PlatformRefund(
        refund_id=_text(refund.get("admin_graphql_api_id")) or f"gid://shopify/Refund/{refund_id}",
        references=[order_id],
        currency=currency,
        amount=_money(sum((Decimal(str(t["amount"])) for t in transactions), Decimal(0)), currency),
        reason=f"shopify: {refund['note']}" if _text(refund.get("note")) else "shopify: refund",
    )
