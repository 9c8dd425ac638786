"""Where a referrer stands: tier progress under the rules as they stand, and their rank.

Both count successful referrals exactly as the ledger does for tiers
(app.rewards.service: `count_successful_referrals`, `successful_referrals_by_referrer`).
"""

from decimal import Decimal
from typing import Any

from babel.numbers import format_currency
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import ReferrerPrincipal
from app.core.money import for_display
from app.me.schemas import Leaderboard, LeaderboardEntry, Progress, RuleProgress, TierStep
from app.me.service import anonymous_label, own_referrer
from app.referrers.models import Referrer
from app.rewards.models import RewardRule
from app.rewards.rules import active_rules
from app.rewards.service import (
    count_successful_referrals,
    rewards_given_by_rule,
    successful_referrals_by_referrer,
    tier_reached,
)
from app.rewards.states import Recipient, RuleKind

DEFAULT_LEADERBOARD_SIZE = 10
MAX_LEADERBOARD_SIZE = 100


def _plain(value: Decimal) -> Decimal:
    """10.0000 → 10, 12.5000 → 12.5 (percentages as people write them)."""
    normalized = value.normalize()
    return normalized.quantize(Decimal(1)) if normalized == normalized.to_integral() else normalized


def _reward_text(kind: RuleKind, currency: str, values: dict[str, Any]) -> str:
    if kind == RuleKind.FIXED:
        amount = for_display(Decimal(str(values["amount"])), currency)
        return str(format_currency(amount, currency, locale="en_US"))
    if kind == RuleKind.PERCENT:
        return f"{_plain(Decimal(str(values['percent'])))}% of the order"
    points = int(values["points"])
    return f"{points} point{'s' if points != 1 else ''}"


def _step(rule: RewardRule, currency: str, from_referral: int, values: dict[str, Any]) -> TierStep:
    amount = values.get("amount")
    percent = values.get("percent")
    return TierStep(
        from_referral=from_referral,
        reward=_reward_text(rule.kind, currency, values),
        amount=for_display(Decimal(str(amount)), currency) if amount is not None else None,
        percent=_plain(Decimal(str(percent))) if percent is not None else None,
        points=values.get("points"),
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def rule_progress(rule: RewardRule, currency: str, successful: int, given: int = 0) -> RuleProgress:
    """The tier `successful` referrals have reached under `rule`, and what the next one takes.

    The ledger pays a referral at the tier its own count reaches (it counts itself), so the
    `referrals_needed`-th referral from now is the first paid at the next tier's rate. `given`
    is how many rewards the rule has paid the referrer, for its cap.
    """
    cap = rule.max_rewards_per_referrer
    rewards_left = max(cap - given, 0) if cap is not None else None
    base = {"amount": rule.amount, "percent": rule.percent, "points": rule.points}
    reached = tier_reached(rule.tiers, successful)
    current = (
        _step(rule, currency, int(reached["from_referral"]), reached)
        if reached
        else _step(rule, currency, 1, base)
    )
    upcoming = sorted(
        (tier for tier in rule.tiers if int(tier["from_referral"]) > successful),
        key=lambda tier: int(tier["from_referral"]),
    )
    if rewards_left == 0:
        return RuleProgress(
            rule_id=rule.id,
            rule_name=rule.name,
            rule_version=rule.version,
            current=current,
            next=None,
            referrals_needed=None,
            rewards_left=0,
            sentence=f"You have earned all {cap} rewards this offer pays.",
        )
    if not upcoming:
        return RuleProgress(
            rule_id=rule.id,
            rule_name=rule.name,
            rule_version=rule.version,
            current=current,
            next=None,
            referrals_needed=None,
            rewards_left=rewards_left,
            sentence=f"You are at the top tier: {current.reward} per referral.",
        )
    following = upcoming[0]
    step = _step(rule, currency, int(following["from_referral"]), following)
    needed = step.from_referral - successful
    plural = "s" if needed != 1 else ""
    return RuleProgress(
        rule_id=rule.id,
        rule_name=rule.name,
        rule_version=rule.version,
        current=current,
        next=step,
        referrals_needed=needed,
        rewards_left=rewards_left,
        sentence=(
            f"{needed} more successful referral{plural} until {step.reward} per referral "
            f"(from your {_ordinal(step.from_referral)} on)."
        ),
    )


async def progress(session: AsyncSession, principal: ReferrerPrincipal) -> Progress:
    """Tier progress for every active referrer rule with tiers, as the rules stand now."""
    referrer, program = await own_referrer(session, principal)
    rules = [
        rule
        for rule in await active_rules(session, program.id)
        if rule.recipient == Recipient.REFERRER and rule.tiers
    ]
    successful = await count_successful_referrals(session, referrer.id)
    capped = [rule.id for rule in rules if rule.max_rewards_per_referrer is not None]
    given = await rewards_given_by_rule(session, referrer.id, capped)
    return Progress(
        successful_referrals=successful,
        rules=[
            rule_progress(rule, program.currency, successful, given.get(rule.id, 0))
            for rule in rules
        ],
    )


def _shown_name(referrer_id: Any, leaderboard_name: str | None) -> str:
    return leaderboard_name or anonymous_label("Referrer", referrer_id)


async def leaderboard(
    session: AsyncSession, principal: ReferrerPrincipal, limit: int
) -> Leaderboard:
    """The referrer's rank and the program's top `limit`, by successful referrals.

    One statement ranks every referrer who has any (ties share a rank); a referrer without
    any ranks after all of them. Others appear only by the name they chose, else anonymised.
    """
    referrer, program = await own_referrer(session, principal)
    counts = successful_referrals_by_referrer(program.id).subquery()
    successful = counts.c.successful_referrals
    ranked = (
        select(
            counts.c.referrer_id,
            successful,
            Referrer.leaderboard_name,
            func.rank().over(order_by=successful.desc()).label("rank"),
            func.row_number()
            .over(order_by=(successful.desc(), Referrer.created_at, Referrer.id))
            .label("position"),
            func.count().over().label("ranked"),
        )
        .join(Referrer, Referrer.id == counts.c.referrer_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(ranked)
            .where(or_(ranked.c.position <= limit, ranked.c.referrer_id == referrer.id))
            .order_by(ranked.c.position)
        )
    ).all()
    top = [
        LeaderboardEntry(
            rank=row.rank,
            name=_shown_name(row.referrer_id, row.leaderboard_name),
            successful_referrals=row.successful_referrals,
            is_you=row.referrer_id == referrer.id,
        )
        for row in rows
        if row.position <= limit
    ]
    mine = next((row for row in rows if row.referrer_id == referrer.id), None)
    you = LeaderboardEntry(
        rank=mine.rank if mine else (rows[0].ranked + 1 if rows else 1),
        name=_shown_name(referrer.id, referrer.leaderboard_name),
        successful_referrals=mine.successful_referrals if mine else 0,
        is_you=True,
    )
    return Leaderboard(you=you, top=top)
