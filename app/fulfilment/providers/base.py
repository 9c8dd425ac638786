"""What the dispatcher hands a provider, what a provider answers, and how it fails.

A provider issues what a job asks for exactly once per reward, whatever was tried before:
`Job.retrying` says an earlier attempt may have reached it (its answer was lost, or it failed),
so the provider looks for what that attempt made before making anything (an idempotency key,
the code chosen when the job was written, a transaction tagged with the reward id).
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol
from uuid import UUID

from app.core.money import minor_unit
from app.rewards.states import FulfilmentMethod, FulfilmentProvider, Recipient


@dataclass(frozen=True)
class Credential:
    shop_domain: str | None
    url: str | None
    secret: str


@dataclass(frozen=True)
class Job:
    fulfilment_id: UUID
    reward_id: UUID
    program_id: UUID
    action: Literal["issue", "revoke"]
    method: FulfilmentMethod
    provider: FulfilmentProvider
    credential: Credential | None
    amount: Decimal
    currency: str
    percent_off: Decimal | None
    code: str | None
    recipient: Recipient
    # The merchant's id of the recipient (a Shopify or Stripe customer id, or an email).
    recipient_id: str
    email: str | None
    reference: str | None
    details: dict[str, Any]
    retrying: bool
    # When the retry window began: what a lost attempt made was made after this.
    due_since: datetime

    @property
    def secret(self) -> str:
        if self.credential is None:
            raise ProviderError(f"The program has no {self.provider} credentials any more.")
        return self.credential.secret

    @property
    def metadata(self) -> dict[str, str]:
        """Tags on what the provider makes: the merchant can trace it back to the reward."""
        return {
            "reward_id": str(self.reward_id),
            "fulfilment_id": str(self.fulfilment_id),
            "program_id": str(self.program_id),
        }


@dataclass(frozen=True)
class Issued:
    reference: str
    code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Revoked:
    """The code is disabled; `used`: it had been used already, so it was left as it is."""

    used: bool = False


class ProviderError(Exception):
    """The provider did not do it. `retryable`: it may work later (5xx, timeouts, throttling,
    a key being fixed); otherwise the job fails at once (the provider refused the request)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message[:500]
        self.retryable = retryable


class Provider(Protocol):
    async def issue(self, job: Job) -> Issued: ...

    async def revoke(self, job: Job) -> Revoked: ...


def minor_units(amount: Decimal, currency: str) -> int:
    """12.34 USD → 1234; 500 JPY → 500 (the amount is already rounded to the minor unit)."""
    return int(amount.scaleb(minor_unit(currency)).to_integral_exact())


def excerpt(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]
