"""Shopify: discount codes, store credit and gift cards through the Admin GraphQL API.

Plain httpx against `https://{shop}/admin/api/{API_VERSION}/graphql.json` with the
`X-Shopify-Access-Token` header. Shopify has no idempotency keys for these mutations, so:

- a coupon or gift card has its code chosen when the job was written; a retry looks the code
  up first (`codeDiscountNodeByCode`, `giftCards(query:)`) and creates only if it is absent,
  and a create refused because the code exists looks it up again;
- store credit has no code: a retry reads the customer's recent credits and takes one of the
  same amount made since the job became due as the lost attempt's, so it never credits twice.

The recipient becomes a Shopify customer by id (numeric, or a `gid://shopify/Customer/…`), or
else by email (the recipient id when it is one, or the referrer's / referee's known email).
"""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from app.core.config import Settings
from app.fulfilment.providers.base import Issued, Job, ProviderError, Revoked, excerpt
from app.rewards.states import FulfilmentMethod

API_VERSION = "2025-10"
CUSTOMER_GID = "gid://shopify/Customer/"
# A credit made up to this long before the window began still counts as the lost attempt's.
CLOCK_SKEW = timedelta(minutes=5)

DISCOUNT_BY_CODE = """
query RewardDiscountByCode($code: String!) {
  codeDiscountNodeByCode(code: $code) {
    id
    codeDiscount { __typename ... on DiscountCodeBasic { status asyncUsageCount } }
  }
}"""
DISCOUNT_CREATE = """
mutation RewardDiscountCreate($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}"""
DISCOUNT_DEACTIVATE = """
mutation RewardDiscountDeactivate($id: ID!) {
  discountCodeDeactivate(id: $id) {
    codeDiscountNode { id codeDiscount { __typename ... on DiscountCodeBasic { status } } }
    userErrors { field code message }
  }
}"""
CUSTOMER_BY_EMAIL = """
query RewardCustomerByEmail($query: String!) {
  customers(first: 2, query: $query) { nodes { id } }
}"""
STORE_CREDIT = """
mutation RewardStoreCredit($id: ID!, $creditInput: StoreCreditAccountCreditInput!) {
  storeCreditAccountCredit(id: $id, creditInput: $creditInput) {
    storeCreditAccountTransaction { id amount { amount currencyCode } account { id } }
    userErrors { field code message }
  }
}"""
STORE_CREDIT_HISTORY = """
query RewardStoreCreditHistory($id: ID!) {
  customer(id: $id) {
    storeCreditAccounts(first: 10) {
      nodes {
        id
        transactions(first: 50, reverse: true) {
          nodes {
            __typename
            createdAt
            amount { amount currencyCode }
            ... on StoreCreditAccountCreditTransaction { id }
          }
        }
      }
    }
  }
}"""
GIFT_CARD_BY_CODE = """
query RewardGiftCardByCode($query: String!) {
  giftCards(first: 5, query: $query) { nodes { id lastCharacters } }
}"""
GIFT_CARD_CREATE = """
mutation RewardGiftCardCreate($input: GiftCardCreateInput!) {
  giftCardCreate(input: $input) {
    giftCard { id lastCharacters }
    giftCardCode
    userErrors { field code message }
  }
}"""


class Shopify:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    async def issue(self, job: Job) -> Issued:
        if job.method == FulfilmentMethod.COUPON:
            return await self._coupon(job)
        if job.method == FulfilmentMethod.STORE_CREDIT:
            return await self._store_credit(job)
        if job.method == FulfilmentMethod.GIFT_CARD:
            return await self._gift_card(job)
        raise ProviderError(f"Shopify does not issue {job.method}.", retryable=False)

    async def revoke(self, job: Job) -> Revoked:
        """Disable an unused discount code; a used one is left as it is."""
        node = await self._discount_by_code(job)
        if node is None:
            return Revoked()  # deleted in the shop: nobody can use it
        discount = node.get("codeDiscount") or {}
        if int(discount.get("asyncUsageCount") or 0) > 0:
            return Revoked(used=True)
        if discount.get("status") == "EXPIRED":
            return Revoked()
        data = await self._call(job, DISCOUNT_DEACTIVATE, {"id": node["id"]})
        _refuse_on_user_errors(data["discountCodeDeactivate"], "deactivate the discount")
        return Revoked()

    # --- coupons ------------------------------------------------------------------------------

    async def _coupon(self, job: Job) -> Issued:
        if job.retrying and (found := await self._discount_by_code(job)) is not None:
            return _discount_issued(job, found["id"])
        customer = await self._customer(job)
        if job.percent_off is not None:
            value: dict[str, Any] = {"percentage": float(job.percent_off / 100)}
        else:
            value = {"discountAmount": {"amount": str(job.amount), "appliesOnEachItem": False}}
        variables = {
            "basicCodeDiscount": {
                "title": f"Referral reward {job.code}",
                "code": job.code,
                "startsAt": datetime.now(UTC).isoformat(),
                # Only this customer, once: the code is theirs alone.
                "context": {"customers": {"add": [customer]}},
                "customerGets": {"value": value, "items": {"all": True}},
                "usageLimit": 1,
                "appliesOncePerCustomer": True,
            }
        }
        data = await self._call(job, DISCOUNT_CREATE, variables)
        payload = data["discountCodeBasicCreate"]
        if payload.get("userErrors"):
            # "Code must be unique": an attempt whose answer was lost (or a twin) made it.
            found = await self._discount_by_code(job)
            if found is not None:
                return _discount_issued(job, found["id"])
            _refuse_on_user_errors(payload, "create the discount")
        node = payload.get("codeDiscountNode") or {}
        if not node.get("id"):
            raise ProviderError("Shopify created no discount and gave no reason.")
        return _discount_issued(job, node["id"])

    async def _discount_by_code(self, job: Job) -> dict[str, Any] | None:
        data = await self._call(job, DISCOUNT_BY_CODE, {"code": job.code})
        node: dict[str, Any] | None = data.get("codeDiscountNodeByCode")
        return node

    # --- store credit -------------------------------------------------------------------------

    async def _store_credit(self, job: Job) -> Issued:
        customer = await self._customer(job)
        if job.retrying and (found := await self._lost_credit(job, customer)) is not None:
            return found
        variables = {
            "id": customer,
            "creditInput": {
                "creditAmount": {"amount": str(job.amount), "currencyCode": job.currency}
            },
        }
        data = await self._call(job, STORE_CREDIT, variables)
        payload = data["storeCreditAccountCredit"]
        _refuse_on_user_errors(payload, "credit the customer")
        transaction = payload.get("storeCreditAccountTransaction") or {}
        if not transaction.get("id"):
            raise ProviderError("Shopify made no store credit transaction and gave no reason.")
        account = (transaction.get("account") or {}).get("id")
        return Issued(transaction["id"], None, {"account_id": account})

    async def _lost_credit(self, job: Job, customer: str) -> Issued | None:
        data = await self._call(job, STORE_CREDIT_HISTORY, {"id": customer})
        accounts = ((data.get("customer") or {}).get("storeCreditAccounts") or {}).get("nodes")
        since = job.due_since - CLOCK_SKEW
        for account in accounts or []:
            for transaction in (account.get("transactions") or {}).get("nodes") or []:
                amount = transaction.get("amount") or {}
                if (
                    transaction.get("__typename") == "StoreCreditAccountCreditTransaction"
                    and transaction.get("id")
                    and amount.get("currencyCode") == job.currency
                    and Decimal(str(amount.get("amount"))) == job.amount
                    and _parse_time(transaction.get("createdAt")) >= since
                ):
                    return Issued(transaction["id"], None, {"account_id": account.get("id")})
        return None

    # --- gift cards ---------------------------------------------------------------------------

    async def _gift_card(self, job: Job) -> Issued:
        if job.retrying and (found := await self._gift_card_by_code(job)) is not None:
            return found
        customer = await self._find_customer(job)
        gift: dict[str, Any] = {
            "initialValue": str(job.amount),
            "code": job.code,
            "note": f"Referral reward {job.reward_id}",
        }
        if customer is not None:
            gift["customerId"] = customer
        data = await self._call(job, GIFT_CARD_CREATE, {"input": gift})
        payload = data["giftCardCreate"]
        if payload.get("userErrors"):
            found = await self._gift_card_by_code(job)
            if found is not None:
                return found
            _refuse_on_user_errors(payload, "create the gift card")
        card = payload.get("giftCard") or {}
        if not card.get("id"):
            raise ProviderError("Shopify created no gift card and gave no reason.")
        return Issued(card["id"], job.code, {"last_characters": card.get("lastCharacters")})

    async def _gift_card_by_code(self, job: Job) -> Issued | None:
        # The default search matches gift card codes; lastCharacters confirms it is this one.
        data = await self._call(job, GIFT_CARD_BY_CODE, {"query": job.code})
        ending = (job.code or "")[-4:].lower()
        for card in (data.get("giftCards") or {}).get("nodes") or []:
            if str(card.get("lastCharacters", "")).lower() == ending:
                return Issued(card["id"], job.code, {"last_characters": card["lastCharacters"]})
        return None

    # --- the customer and the call ------------------------------------------------------------

    async def _customer(self, job: Job) -> str:
        customer = await self._find_customer(job)
        if customer is None:
            raise ProviderError(
                "The recipient is not a Shopify customer: its id is not a Shopify customer id "
                "and no single customer has its email.",
                retryable=False,
            )
        return customer

    async def _find_customer(self, job: Job) -> str | None:
        recipient = job.recipient_id
        if recipient.startswith(CUSTOMER_GID):
            return recipient
        if recipient.isdigit():
            return CUSTOMER_GID + recipient
        email = recipient if "@" in recipient else job.email
        if email:
            data = await self._call(job, CUSTOMER_BY_EMAIL, {"query": f"email:{json.dumps(email)}"})
            nodes = (data.get("customers") or {}).get("nodes") or []
            if len(nodes) == 1:
                return str(nodes[0]["id"])
        return None

    def _url(self, job: Job) -> str:
        shop = job.credential.shop_domain if job.credential else None
        base = self.settings.shopify_admin_base_url or f"https://{shop}"
        return f"{base.rstrip('/')}/admin/api/{API_VERSION}/graphql.json"

    async def _call(self, job: Job, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.http.post(
                self._url(job),
                json={"query": query, "variables": variables},
                headers={"X-Shopify-Access-Token": job.secret},
            )
        except httpx.TimeoutException as exc:
            raise ProviderError("Shopify did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"Shopify could not be reached: {type(exc).__name__}.") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderError(f"Shopify answered {status}.")
        if status in (401, 403):
            raise ProviderError(f"Shopify refused the access token ({status}).")
        if status != 200:
            raise ProviderError(
                f"Shopify answered {status}: {excerpt(response.text)}", retryable=False
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderError("Shopify answered something that is not JSON.") from exc
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            codes = {str((e.get("extensions") or {}).get("code")) for e in errors}
            messages = "; ".join(str(e.get("message")) for e in errors)
            # Throttled (cost over the bucket) is the one GraphQL error that passes by itself.
            raise ProviderError(f"Shopify: {excerpt(messages)}", retryable="THROTTLED" in codes)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ProviderError("Shopify answered without data.")
        return data


def _discount_issued(job: Job, node_id: str) -> Issued:
    return Issued(node_id, job.code, {"discount_id": node_id})


def _refuse_on_user_errors(payload: dict[str, Any], what: str) -> None:
    errors = payload.get("userErrors") or []
    if errors:
        messages = "; ".join(str(error.get("message")) for error in errors)
        raise ProviderError(f"Shopify would not {what}: {excerpt(messages)}", retryable=False)


def _parse_time(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
