from pydantic import Field

from app.core.schemas import OutputModel


class ErasureOut(OutputModel):
    """How many stored rows and copies named the person (README "Erasure" lists them)."""

    customer_id: str
    replaced_by: str = Field(description="The keyed pseudonym that now stands for the person.")
    clicks: int
    referrals: int
    conversions: int
    referrers: int
    rewards: int = Field(description="Ledger entries whose recipient_id was the person.")
    webhook_events: int = Field(description="Outbound webhook payloads rewritten.")
    idempotency_answers: int = Field(description="Stored Idempotency-Key answers rewritten.")
    integration_events: int = Field(description="Kept Stripe and Shopify events rewritten.")
