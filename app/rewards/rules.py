"""Reward rules: create, list, change (a new version each time) and deactivate.

The purchase path reads a program's active rules from an in-process cache (`rules_for`),
checked on every purchase against the program's rules version (`RULES_VERSION`), which the
purchase reads in the statement that locks its program: a rule change in any process is seen
by the next purchase that starts after it commits, as when the rules were read every time.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, get_visible
from app.core.db import utcnow
from app.core.errors import AppError, Unprocessable
from app.core.money import has_valid_precision, minor_unit, quantize
from app.fulfilment import jobs as fulfilment
from app.programs.models import Program
from app.programs.service import get_program
from app.rewards.models import ActiveRule, RewardRule, RewardRuleVersion
from app.rewards.schemas import RuleCreate, RuleOut, RuleUpdate

MAX_RULES_PER_PROGRAM = 50
VALUE_FIELDS = ("amount", "percent", "points", "currency", "tiers")
RULE_FIELDS = (
    "name",
    "recipient",
    "kind",
    "amount",
    "currency",
    "percent",
    "points",
    "trigger",
    "min_order_amount",
    "tiers",
    "max_rewards_per_referrer",
    "hold_days",
    "fulfilment",
    "fulfilment_provider",
    "coupon_percent",
)
# Changing the method starts its provider and coupon percent afresh unless they are given.
FULFILMENT_FIELDS = ("fulfilment_provider", "coupon_percent")


class RuleNotFound(AppError):
    status, code, title = 404, "reward_rule_not_found", "Reward rule not found"


class TooManyRules(AppError):
    status, code, title = 422, "too_many_rules", "The program has too many reward rules"


class InvalidRule(AppError):
    status, code, title = 422, "invalid_rule", "The reward rule is not valid"


def _check_money(program: Program, data: RuleCreate) -> dict[str, Any]:
    """The rule's stored values, with currency checks against the program."""
    values = data.model_dump(mode="python")
    if data.currency not in (None, program.currency):
        raise InvalidRule(f"the program counts in {program.currency}")
    values["currency"] = program.currency
    money = [data.amount, data.min_order_amount, *(tier.amount for tier in data.tiers)]
    for amount in money:
        if amount is not None and not has_valid_precision(amount, program.currency):
            raise InvalidRule(
                f"{amount} has more decimals than {program.currency} allows "
                f"({minor_unit(program.currency)})"
            )
    values["tiers"] = [
        tier.model_dump(mode="json", exclude_none=True)
        for tier in sorted(data.tiers, key=lambda t: t.from_referral)
    ]
    return values


async def create_rule(
    session: AsyncSession, principal: Principal, program_id: UUID, data: RuleCreate
) -> RuleOut:
    """Add a rule to the program; it pays conversions recorded from now on."""
    program = await get_program(session, principal, program_id, for_update=True)
    count = await session.scalar(
        select(func.count()).select_from(RewardRule).where(RewardRule.program_id == program.id)
    )
    if (count or 0) >= MAX_RULES_PER_PROGRAM:
        raise TooManyRules(f"a program may have at most {MAX_RULES_PER_PROGRAM} rules")
    await fulfilment.check_rule(session, program, data)
    now = utcnow()
    rule = RewardRule(
        program_id=program.id,
        version=1,
        active=True,
        created_at=now,
        updated_at=now,
        **{field: value for field, value in _check_money(program, data).items()},
    )
    session.add(rule)
    await session.flush()
    await _snapshot(session, rule)
    return RuleOut.model_validate(rule)


async def list_rules(
    session: AsyncSession, principal: Principal, program_id: UUID
) -> list[RuleOut]:
    program = await get_program(session, principal, program_id)
    rules = await session.scalars(
        select(RewardRule)
        .where(RewardRule.program_id == program.id)
        .order_by(RewardRule.created_at, RewardRule.id)
    )
    return [RuleOut.model_validate(rule) for rule in rules]


async def get_rule(
    session: AsyncSession, principal: Principal, rule_id: UUID, *, for_update: bool = False
) -> RewardRule:
    query = select(RewardRule).where(RewardRule.id == rule_id)
    if for_update:
        query = query.with_for_update()
    return await get_visible(session, query, principal, RuleNotFound, RewardRule.program_id)


async def update_rule(
    session: AsyncSession, principal: Principal, rule_id: UUID, data: RuleUpdate
) -> RuleOut:
    """Change the rule; a new version pays later conversions, earlier rewards keep theirs."""
    rule = await get_rule(session, principal, rule_id, for_update=True)
    program = await session.get(Program, rule.program_id)
    assert program is not None
    changes = data.model_dump(exclude_unset=True)
    active = changes.pop("active", rule.active)
    if active is None:
        raise Unprocessable("active cannot be null")
    current = {field: getattr(rule, field) for field in RULE_FIELDS}
    # Stored money has the column's four decimals; back to the minor unit it was given in.
    for field in ("amount", "min_order_amount"):
        if current[field] is not None:
            current[field] = quantize(current[field], program.currency)
    if "kind" in changes:
        for field in VALUE_FIELDS:
            current.pop(field, None)
    if changes.get("fulfilment") is not None:
        for field in FULFILMENT_FIELDS:
            current.pop(field, None)
    if "fulfilment" in changes and changes["fulfilment"] is None:
        raise Unprocessable("fulfilment cannot be null")
    merged = {**current, **changes}
    try:
        validated = RuleCreate.model_validate(merged)
    except ValidationError as exc:
        raise InvalidRule(str(exc.errors()[0]["msg"])) from exc
    await fulfilment.check_rule(session, program, validated)
    values = _check_money(program, validated)
    value_changed = any(getattr(rule, field) != value for field, value in values.items())
    for field, value in values.items():
        setattr(rule, field, value)
    if value_changed or active != rule.active:
        rule.active = active
        rule.version += 1
        rule.updated_at = utcnow()
        await session.flush()
        await _snapshot(session, rule)
    return RuleOut.model_validate(rule)


async def active_rules(session: AsyncSession, program_id: UUID) -> list[RewardRule]:
    return list(
        await session.scalars(
            select(RewardRule)
            .where(RewardRule.program_id == program_id, RewardRule.active.is_(True))
            .order_by(RewardRule.created_at, RewardRule.id)
        )
    )


# What identifies a program's rules as stored: every change is a new version of a rule, and
# rules are never deleted, so the sum of the versions grows with each change committed; the
# latest `updated_at` tells apart a change that was rolled back from the one made after it.
RulesVersion = tuple[int, datetime | None]
CACHED_PROGRAMS = 10_000
_cache: dict[UUID, tuple[RulesVersion, tuple[ActiveRule, ...]]] = {}


def rules_version_columns(program_id: ColumnElement[UUID] | Any) -> list[ColumnElement[Any]]:
    """Two columns for the statement that reads the program: its rules version (`RulesVersion`),
    read in that statement's snapshot."""
    of_program = RewardRule.program_id == program_id
    return [
        select(func.coalesce(func.sum(RewardRule.version), 0))
        .where(of_program)
        .scalar_subquery()
        .label("rules_version_sum"),
        select(func.max(RewardRule.updated_at))
        .where(of_program)
        .scalar_subquery()
        .label("rules_updated_at"),
    ]


def _version_of(rules: Sequence[RewardRule]) -> RulesVersion:
    return (
        sum(rule.version for rule in rules),
        max((rule.updated_at for rule in rules), default=None),
    )


async def rules_for(
    session: AsyncSession, program_id: UUID, version: RulesVersion
) -> tuple[ActiveRule, ...]:
    """The program's active rules, oldest first: from the cache when `version` (read by this
    transaction) is the cached one, else read (one statement) and cached under the version
    they were read at."""
    cached = _cache.get(program_id)
    if cached is not None and cached[0] == version:
        return cached[1]
    every = list(
        await session.scalars(
            select(RewardRule)
            .where(RewardRule.program_id == program_id)
            .order_by(RewardRule.created_at, RewardRule.id)
        )
    )
    active = tuple(ActiveRule.of(rule) for rule in every if rule.active)
    if len(_cache) >= CACHED_PROGRAMS:
        _cache.clear()
    # Keyed by what was read, not by `version`: a change committed between the two statements
    # is then read again by the next purchase, never served under the older version.
    _cache[program_id] = (_version_of(every), active)
    return active


async def _snapshot(session: AsyncSession, rule: RewardRule) -> None:
    session.add(
        RewardRuleVersion(
            rule_id=rule.id,
            version=rule.version,
            snapshot=RuleOut.model_validate(rule).model_dump(mode="json"),
        )
    )
    await session.flush()
