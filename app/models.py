"""Every table, imported in one place so that Alembic and the tests see the whole schema."""

from app.conversions.models import Conversion, Refund
from app.core.db import Base
from app.emails.models import EmailMessage, EmailSuppression, EmailTemplate
from app.fulfilment.models import Fulfilment, FulfilmentCredential
from app.idempotency.models import IdempotencyRecord
from app.integrations.models import IntegrationEvent, IntegrationReference, IntegrationSecret
from app.keys.models import ApiKey
from app.metrics.models import channel_rollups, program_rollups, referrer_rollups
from app.payouts.models import Charity, PayoutBatch, PayoutLine
from app.points.models import PointsItem, PointsRedemption
from app.programs.models import CustomerTokenSecret, Program
from app.referrer_sessions.models import ReferrerSession
from app.referrers.models import Code, Referrer
from app.rewards.models import Reward, RewardRule, RewardRuleVersion
from app.tracking.models import Click, ClickClaim, Referral
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "ApiKey",
    "Base",
    "Charity",
    "Click",
    "ClickClaim",
    "Code",
    "Conversion",
    "CustomerTokenSecret",
    "EmailMessage",
    "EmailSuppression",
    "EmailTemplate",
    "Fulfilment",
    "FulfilmentCredential",
    "IdempotencyRecord",
    "IntegrationEvent",
    "IntegrationReference",
    "IntegrationSecret",
    "PayoutBatch",
    "PayoutLine",
    "PointsItem",
    "PointsRedemption",
    "Program",
    "Referral",
    "Referrer",
    "ReferrerSession",
    "Refund",
    "Reward",
    "RewardRule",
    "RewardRuleVersion",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "channel_rollups",
    "program_rollups",
    "referrer_rollups",
]
