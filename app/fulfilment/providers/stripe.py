"""Stripe: coupons with promotion codes, and customer balance credits, via the official library.

Every create carries an `Idempotency-Key` derived from the reward id, so an attempt whose
answer was lost is answered with what it made. Stripe keeps those keys for 24 hours, which a
long retry window outlasts; so a retry also looks first: the coupon has the reward's id as its
own id (a second create is `resource_already_exists`), the promotion code is found by the code
chosen when the job was written, and a balance credit by the reward id in its metadata.

The recipient is a Stripe customer: its id (`cus_…`), or the one customer with its email.
"""

from contextlib import suppress
from typing import Any, TypeVar

import stripe

from app.core.config import Settings
from app.fulfilment.providers.base import (
    Issued,
    Job,
    ProviderError,
    Revoked,
    excerpt,
    minor_units,
)
from app.rewards.states import FulfilmentMethod

T = TypeVar("T")
COUPON_NAME = "Referral reward"
# The balance credits read when looking for a lost attempt's (Stripe's largest page).
HISTORY_PAGE = 100


class Stripe:
    def __init__(self, http: stripe.HTTPClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    def _client(self, job: Job) -> stripe.StripeClient:
        return stripe.StripeClient(
            job.secret,
            base_addresses={"api": self.settings.stripe_api_base_url},
            http_client=self.http,
            # Our own retries (the dispatcher's backoff) replace the library's.
            max_network_retries=0,
        )

    async def issue(self, job: Job) -> Issued:
        client = self._client(job)
        if job.method == FulfilmentMethod.COUPON:
            return await self._coupon(client, job)
        if job.method == FulfilmentMethod.STORE_CREDIT:
            return await self._balance_credit(client, job)
        raise ProviderError(f"Stripe does not issue {job.method}.", retryable=False)

    async def revoke(self, job: Job) -> Revoked:
        """Deactivate an unused promotion code; a redeemed one is left as it is."""
        client = self._client(job)
        if job.reference:
            promotion = await _call(client.v1.promotion_codes.retrieve_async(job.reference))
        else:  # an attempt cut off while the reward was reversed: did it make one?
            promotion = await self._promotion_by_code(client, job)
            if promotion is None:
                return Revoked()
        if int(promotion.times_redeemed or 0) > 0:
            return Revoked(used=True)
        if promotion.active:
            await _call(client.v1.promotion_codes.update_async(promotion.id, {"active": False}))
        return Revoked()

    async def _coupon(self, client: stripe.StripeClient, job: Job) -> Issued:
        customer = await self._customer(client, job)
        coupon_id = f"reward_{job.reward_id.hex}"
        coupon: dict[str, Any] = {
            "id": coupon_id,
            "name": COUPON_NAME,
            "duration": "once",
            "max_redemptions": 1,
            "metadata": job.metadata,
        }
        if job.percent_off is not None:
            coupon["percent_off"] = float(job.percent_off)
        else:
            coupon["amount_off"] = minor_units(job.amount, job.currency)
            coupon["currency"] = job.currency.lower()
        with suppress(_AlreadyExists):  # made by an earlier attempt
            await _call(
                client.v1.coupons.create_async(
                    coupon,  # type: ignore[arg-type]
                    {"idempotency_key": f"{job.reward_id}:coupon"},
                )
            )
        if job.retrying and (found := await self._promotion_by_code(client, job)) is not None:
            return _promotion_issued(found, coupon_id)
        try:
            promotion = await _call(
                client.v1.promotion_codes.create_async(
                    {
                        "promotion": {"type": "coupon", "coupon": coupon_id},
                        "code": job.code or "",
                        # Only this customer, once.
                        "customer": customer,
                        "max_redemptions": 1,
                        "metadata": job.metadata,
                    },
                    {"idempotency_key": f"{job.reward_id}:promotion_code"},
                )
            )
        except _AlreadyExists as exc:
            found = await self._promotion_by_code(client, job)
            if found is None:
                raise ProviderError("Stripe: the code exists but cannot be found.") from exc
            promotion = found
        return _promotion_issued(promotion, coupon_id)

    async def _promotion_by_code(self, client: stripe.StripeClient, job: Job) -> Any:
        found = await _call(
            client.v1.promotion_codes.list_async({"code": job.code or "", "limit": 1})
        )
        return found.data[0] if found.data else None

    async def _balance_credit(self, client: stripe.StripeClient, job: Job) -> Issued:
        customer = await self._customer(client, job)
        balance = client.v1.customers.balance_transactions
        if job.retrying:
            page = await _call(balance.list_async(customer, {"limit": HISTORY_PAGE}))
            for transaction in page.data:
                tags = transaction.metadata.to_dict() if transaction.metadata else {}
                if tags.get("reward_id") == str(job.reward_id):
                    return Issued(transaction.id, None, {"customer_balance": True})
        transaction = await _call(
            balance.create_async(
                customer,
                {
                    # Negative: a credit the customer's next invoices draw on.
                    "amount": -minor_units(job.amount, job.currency),
                    "currency": job.currency.lower(),
                    "description": COUPON_NAME,
                    "metadata": job.metadata,
                },
                {"idempotency_key": f"{job.reward_id}:balance"},
            )
        )
        return Issued(transaction.id, None, {"customer_balance": True})

    async def _customer(self, client: stripe.StripeClient, job: Job) -> str:
        recipient = job.recipient_id
        if recipient.startswith("cus_"):
            return recipient
        email = recipient if "@" in recipient else job.email
        if email:
            found = await _call(client.v1.customers.list_async({"email": email, "limit": 2}))
            if len(found.data) == 1:
                return str(found.data[0].id)
        raise ProviderError(
            "The recipient is not a Stripe customer: its id is not a cus_ id and no single "
            "customer has its email.",
            retryable=False,
        )


class _AlreadyExists(Exception):
    pass


def _promotion_issued(promotion: Any, coupon_id: str) -> Issued:
    return Issued(str(promotion.id), str(promotion.code), {"coupon_id": coupon_id})


async def _call(pending: Any) -> Any:
    """Await a library call, its failures as ProviderError (retryable unless Stripe refused)."""
    try:
        return await pending
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_already_exists":
            raise _AlreadyExists() from exc
        what = exc.user_message or exc.code or "invalid request"
        raise ProviderError(f"Stripe refused: {excerpt(str(what))}", retryable=False) from exc
    except stripe.IdempotencyError as exc:
        raise ProviderError(
            "Stripe: the idempotency key was used with other parameters.", retryable=False
        ) from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise ProviderError(f"Stripe refused the key ({exc.http_status}).") from exc
    except stripe.RateLimitError as exc:
        raise ProviderError("Stripe is rate limiting (429).") from exc
    except stripe.APIConnectionError as exc:
        raise ProviderError("Stripe could not be reached or did not answer in time.") from exc
    except stripe.StripeError as exc:
        raise ProviderError(f"Stripe answered {exc.http_status}.") from exc
