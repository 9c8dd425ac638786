"""Every table, imported in one place so that Alembic and the tests see the whole schema."""

from app.conversions.models import Conversion, Refund
from app.db import Base
from app.idempotency.models import IdempotencyRecord
from app.keys.models import ApiKey
from app.programs.models import Program
from app.referrers.models import Code, Referrer
from app.rewards.models import Reward, RewardRule, RewardRuleVersion
from app.tracking.models import Click, Referral

__all__ = [
    "ApiKey",
    "Base",
    "Click",
    "Code",
    "Conversion",
    "IdempotencyRecord",
    "Program",
    "Referral",
    "Referrer",
    "Refund",
    "Reward",
    "RewardRule",
    "RewardRuleVersion",
]
