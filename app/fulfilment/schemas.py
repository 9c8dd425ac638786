from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import Field, StringConstraints, model_validator

from app.core.money import for_display
from app.core.schemas import HttpUrl, InputModel, OutputModel
from app.fulfilment.states import FulfilmentStatus
from app.rewards.states import FulfilmentMethod, FulfilmentProvider

Token = Annotated[str, StringConstraints(min_length=16, max_length=255, pattern=r"^\S+$")]


class ShopifyCredentials(InputModel):
    """A custom app's Admin API access token (scopes in the README), for one shop."""

    provider: Literal["shopify"]
    shop_domain: Annotated[
        str,
        StringConstraints(
            max_length=255, to_lower=True, pattern=r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$"
        ),
    ] = Field(description="The shop's permanent domain, e.g. acme.myshopify.com")
    access_token: Token = Field(description="The Admin API access token (shpat_…)")


class StripeCredentials(InputModel):
    provider: Literal["stripe"]
    secret_key: Annotated[
        str, StringConstraints(max_length=255, pattern=r"^(sk|rk)_(test|live)_[0-9A-Za-z]{8,}$")
    ] = Field(description="A secret (sk_…) or restricted (rk_…) key of the Stripe account")


class WebhookCredentials(InputModel):
    """Any issuer behind a URL: the service POSTs signed requests to it (README: Fulfilment)."""

    provider: Literal["webhook"]
    url: HttpUrl


CredentialsCreate = Annotated[
    ShopifyCredentials | StripeCredentials | WebhookCredentials,
    Field(discriminator="provider"),
]


class ProviderOut(OutputModel):
    id: UUID
    program_id: UUID
    provider: FulfilmentProvider
    shop_domain: str | None
    url: str | None
    prefix: str = Field(description="The secret's first characters; the rest is never shown.")
    created_at: datetime
    updated_at: datetime


class ProviderCreated(ProviderOut):
    signing_secret: str | None = Field(
        default=None,
        description="webhook only: whsec_ + base64, the Standard Webhooks signing secret of the "
        "requests, shown this once.",
    )


class FulfilmentOut(OutputModel):
    id: UUID
    program_id: UUID
    reward_id: UUID
    method: FulfilmentMethod
    provider: FulfilmentProvider
    status: FulfilmentStatus
    code: str | None = Field(description="The coupon or gift card code, once issued.")
    percent_off: Decimal | None
    amount: Decimal | None = Field(description="What was asked of the provider (first attempt).")
    currency: str
    reference: str | None = Field(
        description="The provider's id: discount node, promotion code, gift card, transaction, "
        "or the fulfilment webhook's answer."
    )
    attempts: int = Field(description="Attempts in the current retry window.")
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    error: str | None
    fulfilled_at: datetime | None
    revoked_at: datetime | None
    redeemed_at: datetime | None = Field(
        description="coupons: when an order (Shopify) or checkout (Stripe) used the code"
    )
    redeemed_amount: Decimal | None = Field(
        description="What that order took off with it: the reward's true cost"
    )
    redeemed_order: str | None = Field(description="The order or checkout that used it")
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _display(self) -> Self:
        if self.amount is not None:
            self.amount = for_display(self.amount, self.currency)
        if self.redeemed_amount is not None:
            self.redeemed_amount = for_display(self.redeemed_amount, self.currency)
        if self.percent_off is not None:
            self.percent_off = self.percent_off.normalize()
        return self
