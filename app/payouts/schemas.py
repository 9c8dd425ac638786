import unicodedata
from datetime import datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, Field, StringConstraints

from app.core.schemas import (
    AwareDatetime,
    Currency,
    HttpUrl,
    InputModel,
    OutputModel,
    PositiveMoney,
)
from app.payouts.states import BatchKind, BatchStatus, LineStatus, PayoutMethod


def _printable(value: str) -> str:
    for char in value:
        category = unicodedata.category(char)
        if category.startswith("C") or category in ("Zl", "Zp"):
            raise ValueError(f"may not contain control or invisible characters (U+{ord(char):04X})")
    return value


Text200 = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    AfterValidator(_printable),
]
Recipient = Annotated[
    str,
    StringConstraints(min_length=1, max_length=320, strip_whitespace=True),
    AfterValidator(_printable),
]


class CharityCreate(InputModel):
    name: Text200
    registration_number: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = (
        Field(default=None, description="The charity's registration number, for the receipts")
    )
    url: HttpUrl | None = None


class CharityUpdate(InputModel):
    name: Text200 | None = None
    registration_number: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = (
        None
    )
    url: HttpUrl | None = None
    active: bool | None = Field(
        default=None,
        description="false: referrers can no longer choose it (choices made stay, and are batched)",
    )


class CharityOut(OutputModel):
    id: UUID
    program_id: UUID
    name: str
    registration_number: str | None
    url: str | None
    active: bool
    created_at: datetime
    accumulated: Decimal = Field(
        default=Decimal(0),
        description="Approved donations (net of clawbacks) of the referrers who chose it, in "
        "no batch yet: what the next donation batch would give it before its minimum",
    )
    donors: int = Field(default=0, description="Referrers with such donations")


class CharityChoice(OutputModel):
    id: UUID
    name: str
    registration_number: str | None
    url: str | None


class PayoutSettingsUpdate(InputModel):
    """Where the referrer's cash rewards are paid and which charity gets their donation rewards.

    Fields left out stay as they are; `payout_method` and `payout_recipient` are set together
    (both null clears them).
    """

    payout_method: PayoutMethod | None = None
    payout_recipient: Recipient | None = Field(
        default=None,
        description="paypal: the PayPal account's email, mobile number or PayerID; other: "
        "the id the merchant pays to (stored as given, shown masked)",
    )
    charity_id: UUID | None = Field(
        default=None, description="One of the program's active charities; null clears it"
    )


class PayoutSettings(OutputModel):
    payout_method: PayoutMethod | None
    payout_recipient: str | None = Field(
        description="Masked (p***@e***.com, ****1234): whole only in the batch exports"
    )
    charity: CharityChoice | None


class ReferrerPayoutSettings(PayoutSettings):
    referrer_id: UUID


class BatchCreate(InputModel):
    currency: Currency
    minimum_amount: PositiveMoney | None = Field(
        default=None,
        description="A referrer (or donor) whose net balance is below this waits for a later "
        "batch; default: any positive balance",
    )
    cutoff: AwareDatetime | None = Field(
        default=None, description="Only rewards (and clawbacks) approved at or before this time"
    )


class BatchPay(InputModel):
    reference: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="The payment's reference (a PayPal payout batch id, a bank transfer id): "
        "stored on every reward of the batch as its payout_reference"
    )


class BatchLine(OutputModel):
    referrer_id: UUID
    external_id: str
    status: LineStatus
    amount: Decimal
    reward_count: int
    payout_method: PayoutMethod | None
    payout_recipient: str | None = Field(description="Masked; whole in the CSV exports")
    charity_id: UUID | None


class CharityTotal(OutputModel):
    charity: CharityChoice
    amount: Decimal
    donors: int


class BatchOut(OutputModel):
    id: UUID
    program_id: UUID
    kind: BatchKind
    status: BatchStatus
    currency: str
    minimum_amount: Decimal | None
    cutoff: datetime | None
    total: Decimal = Field(description="The sum of the included lines")
    reward_count: int = Field(description="Ledger entries (rewards and clawbacks) in the batch")
    reference: str | None
    lines: list[BatchLine] = Field(description="The referrers paid (or donating) in this batch")
    left_out: list[BatchLine] = Field(
        description="Referrers owed an amount but left out (no payout details, no charity): "
        "their rewards wait for a later batch"
    )
    charities: list[CharityTotal] = Field(
        description="Donation batches: the total per charity (the lines are its receipts)"
    )
    created_at: datetime
    paid_at: datetime | None
    cancelled_at: datetime | None


class BatchSummary(OutputModel):
    id: UUID
    program_id: UUID
    kind: BatchKind
    status: BatchStatus
    currency: str
    total: Decimal
    reward_count: int
    reference: str | None
    created_at: datetime
    paid_at: datetime | None
    cancelled_at: datetime | None
