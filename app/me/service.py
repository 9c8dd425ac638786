"""A referrer's own view (/v1/me…): their profile and codes, referred friends, rewards, balance.

Every function takes the session's ReferrerPrincipal and reads through `scoped` / `get_visible`
with the referrer column, so a session sees its referrer and nothing else. Friends appear
masked (a masked email or an anonymous label), never with their customer id.
"""

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion
from app.core.access import ReferrerPrincipal, get_visible, scoped
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import AppError
from app.core.money import for_display
from app.core.pagination import PageParams, paginate
from app.me.schemas import (
    MeOut,
    MeProgram,
    MeReferral,
    MeReferrer,
    MeReward,
    MeRewardRule,
    MeUpdate,
    ReferralStatus,
)
from app.payouts import details as payout_details
from app.programs.models import Program
from app.referrers.codes import code_state
from app.referrers.models import Code, Referrer
from app.referrers.service import ReferrerNotFound, code_out
from app.referrers.share import share_for
from app.rewards.models import Reward, RewardRuleVersion
from app.rewards.schemas import Balance
from app.rewards.service import RewardNotFound, balance, status_as_read
from app.rewards.states import EntryType, Recipient, RewardStatus, reads_as
from app.tracking.models import Referral


class ReferralNotFound(AppError):
    status, code, title = 404, "referral_not_found", "Referral not found"


async def own_referrer(
    session: AsyncSession, principal: ReferrerPrincipal
) -> tuple[Referrer, Program]:
    """The session's referrer and its program, in one statement."""
    query = cast(
        Select[Any],
        select(Referrer, Program)
        .join(Program, Program.id == Referrer.program_id)
        .where(Referrer.id == principal.referrer_id),
    )
    row = (
        await session.execute(scoped(query, principal, Referrer.program_id, Referrer.id))
    ).first()
    if row is None:
        raise ReferrerNotFound()
    referrer, program = row
    return referrer, program


async def read_me(session: AsyncSession, principal: ReferrerPrincipal, settings: Settings) -> MeOut:
    """The referrer, their codes and links, what to share on each channel, the friend's offer."""
    referrer, program = await own_referrer(session, principal)
    return await _me_out(session, principal, settings, referrer, program)


async def update_me(
    session: AsyncSession, principal: ReferrerPrincipal, settings: Settings, data: MeUpdate
) -> MeOut:
    """Change what the referrer may change about themselves: their leaderboard name, payout
    details and charity."""
    referrer, program = await own_referrer(session, principal)
    changes = data.model_dump(exclude_unset=True)
    if "leaderboard_name" in changes:
        referrer.leaderboard_name = changes["leaderboard_name"]
        await session.flush()
    await payout_details.apply_settings(session, referrer, data)
    return await _me_out(session, principal, settings, referrer, program)


async def _me_out(
    session: AsyncSession,
    principal: ReferrerPrincipal,
    settings: Settings,
    referrer: Referrer,
    program: Program,
) -> MeOut:
    query = scoped(select(Code), principal, Code.program_id, Code.referrer_id)
    codes = list(await session.scalars(query.order_by(Code.created_at, Code.id)))
    now = utcnow()
    usable = [code for code in codes if code_state(code, program, now) == "valid"]
    shared = min(usable, key=lambda code: not code.is_default) if usable else None
    return MeOut(
        referrer=MeReferrer(
            id=referrer.id,
            program_id=referrer.program_id,
            external_id=referrer.external_id,
            name=referrer.name,
            leaderboard_name=referrer.leaderboard_name,
        ),
        program=MeProgram(
            name=program.name,
            currency=program.currency,
            attribution_window_days=program.attribution_window_days,
        ),
        codes=[code_out(settings, code, program) for code in codes],
        share=share_for(program, shared.code, settings) if shared else None,
        referee_offer=program.referee_offer,
        payout=await payout_details.settings_of(session, referrer),
        charities=await payout_details.active_charities(session, program.id),
    )


# --- referred friends ---------------------------------------------------------------------

EXPLANATIONS = {
    ReferralStatus.REDEEMED: "Used your code; a purchase by {counts_until} counts.",
    ReferralStatus.PURCHASED: "Bought; no reward rule pays for this purchase.",
    ReferralStatus.REWARDED: "Bought, and you earned a reward.",
    ReferralStatus.REFUNDED: "Bought, then the order was refunded.",
}
# The attribution's reason codes (app.conversions.attribution), for people.
NOT_COUNTED = {
    "self_referral": "The purchase was made with your own account or email.",
    "outside_window": "They did not buy within {window} days of using your code.",
    "after_conversion": "They used your code only after buying.",
    "lower_priority": "Their purchase was credited to another referral they used.",
    "model": "Their purchase was credited to another referral they used.",
    "code_disabled": "Your code was disabled when they bought.",
    "code_expired": "Your code had expired when they bought.",
    "bot": "The visit looked automated.",
    "not_attributable": "Your link was not active when they visited.",
    "reward_reversed": "The shop reversed the reward for this purchase.",
}
NOT_COUNTED_OTHERWISE = "Their purchase was not credited to a referral."


def mask_email(email: str) -> str:
    """jane.doe@example.com → j***@e***.com: enough to recognise a friend, not to write them."""
    local, _, domain = email.partition("@")
    host, _, tld = domain.rpartition(".")
    masked_domain = f"{host[:1]}***.{tld}" if host else f"{tld[:1]}***"
    return f"{local[:1]}***@{masked_domain}"


def anonymous_label(prefix: str, row_id: UUID) -> str:
    """A stable label for someone shown without a name ("Friend #3FA9C2")."""
    digest = hashlib.sha256(f"{prefix}:{row_id}".encode()).hexdigest()[:6].upper()
    return f"{prefix} #{digest}"


def _friend(referral: Referral) -> str:
    return mask_email(referral.email) if referral.email else anonymous_label("Friend", referral.id)


def _my_candidate_reason(conversion: Conversion, referrer_id: UUID) -> str | None:
    """Why the referrer's touch lost this conversion, from its stored attribution."""
    for candidate in conversion.attribution.get("candidates", []):
        if candidate.get("referrer_id") == str(referrer_id) and candidate.get("outcome") == "lost":
            return str(candidate.get("reason") or "") or None
    return None


def _referral_out(
    referral: Referral,
    program: Program,
    conversions: Sequence[Conversion],
    reward_statuses: dict[UUID, list[RewardStatus]],
    now: datetime,
) -> MeReferral:
    mine = [c for c in conversions if c.referral_id == referral.id]
    others = [c for c in conversions if c.referral_id != referral.id]
    window_ends = referral.occurred_at + timedelta(days=program.attribution_window_days)
    reason: str | None = None
    counts_until = None
    if mine:
        statuses = [s for c in mine for s in reward_statuses.get(c.id, [])]
        if all(c.refunded_amount >= c.amount for c in mine):
            status = ReferralStatus.REFUNDED
        elif any(s != RewardStatus.REVERSED for s in statuses):
            status = ReferralStatus.REWARDED
        elif statuses:
            status, reason = ReferralStatus.NOT_COUNTED, "reward_reversed"
        else:
            status = ReferralStatus.PURCHASED
    elif others:
        latest = max(others, key=lambda c: (c.occurred_at, c.id))
        status = ReferralStatus.NOT_COUNTED
        reason = _my_candidate_reason(latest, referral.referrer_id) or latest.attribution_reason
    elif window_ends <= now:
        status, reason = ReferralStatus.NOT_COUNTED, "outside_window"
    else:
        status, counts_until = ReferralStatus.REDEEMED, window_ends
    if status == ReferralStatus.NOT_COUNTED:
        template = NOT_COUNTED.get(reason or "", NOT_COUNTED_OTHERWISE)
    else:
        template = EXPLANATIONS[status]
    explanation = template.format(
        window=program.attribution_window_days, counts_until=f"{window_ends:%Y-%m-%d}"
    )
    return MeReferral(
        id=referral.id,
        friend=_friend(referral),
        status=status,
        reason=reason,
        explanation=explanation,
        source="redemption" if referral.source == "redemption" else "purchase",
        referred_at=referral.occurred_at,
        purchased_at=min((c.occurred_at for c in mine), default=None),
        counts_until=counts_until,
        created_at=referral.created_at,
    )


async def _referrals_out(
    session: AsyncSession, program: Program, referrals: Sequence[Referral]
) -> list[MeReferral]:
    """Two statements whatever the number of referrals: their purchases, and what those paid."""
    now = utcnow()
    customers = {referral.customer_id for referral in referrals}
    by_customer: dict[str, list[Conversion]] = {customer: [] for customer in customers}
    reward_statuses: dict[UUID, list[RewardStatus]] = {}
    if customers:
        # The friends' purchases, whoever they were credited to: read only to say why a
        # purchase did or did not count; nothing of them is shown but the reason code.
        conversions = await session.scalars(
            select(Conversion).where(
                Conversion.program_id == program.id, Conversion.customer_id.in_(customers)
            )
        )
        for conversion in conversions:
            by_customer[conversion.customer_id].append(conversion)
        credited = [
            c.id for rows in by_customer.values() for c in rows if c.referral_id is not None
        ]
        if credited:
            rows = await session.execute(
                select(Reward.conversion_id, status_as_read(now)).where(
                    Reward.conversion_id.in_(credited),
                    Reward.recipient == Recipient.REFERRER,
                    Reward.entry_type == EntryType.REWARD,
                )
            )
            for conversion_id, status in rows:
                assert conversion_id is not None  # chosen by conversion
                reward_statuses.setdefault(conversion_id, []).append(RewardStatus(status))
    return [
        _referral_out(r, program, by_customer[r.customer_id], reward_statuses, now)
        for r in referrals
    ]


async def list_referrals(
    session: AsyncSession, principal: ReferrerPrincipal, params: PageParams
) -> tuple[list[MeReferral], str | None]:
    """The referrer's referred friends, oldest first, each with where it stands."""
    _, program = await own_referrer(session, principal)
    query = scoped(select(Referral), principal, Referral.program_id, Referral.referrer_id)
    rows, next_cursor = await paginate(session, query, Referral, params)
    return await _referrals_out(session, program, rows), next_cursor


async def read_referral(
    session: AsyncSession, principal: ReferrerPrincipal, referral_id: UUID
) -> MeReferral:
    _, program = await own_referrer(session, principal)
    referral = await get_visible(
        session,
        select(Referral).where(Referral.id == referral_id),
        principal,
        ReferralNotFound,
        Referral.program_id,
        Referral.referrer_id,
    )
    return (await _referrals_out(session, program, [referral]))[0]


# --- rewards and balance -------------------------------------------------------------------


def _own_rewards(principal: ReferrerPrincipal) -> Any:
    # Referee rewards carry the referrer too (who referred), but they are the friend's.
    query = scoped(select(Reward), principal, Reward.program_id, Reward.referrer_id)
    return query.where(Reward.recipient == Recipient.REFERRER)


def _why(entry_type: EntryType, snapshot: dict[str, Any], version: int | None) -> str:
    if version is None:  # no rule paid it: a points redemption (app.points)
        if entry_type == EntryType.SPEND:
            return "Points spent on a reward from the catalogue."
        return "A reward from the points catalogue."
    name = snapshot.get("name") or "Referral reward"
    for_what = (
        "a referred friend's first purchase"
        if snapshot.get("trigger") == "first_purchase"
        else "a referred friend's purchase"
    )
    if entry_type == EntryType.CLAWBACK:
        return f"Taken back after a refund: “{name}” (version {version}), for {for_what}."
    return f"“{name}” (version {version}), for {for_what}."


async def _rewards_out(session: AsyncSession, rewards: Sequence[Reward]) -> list[MeReward]:
    """Two statements whatever the number of rewards: the rule versions, the referrals."""
    now = utcnow()
    pairs = {
        (reward.rule_id, reward.rule_version)
        for reward in rewards
        if reward.rule_id is not None and reward.rule_version is not None
    }
    snapshots: dict[tuple[UUID | None, int | None], dict[str, Any]] = {}
    referrals: dict[UUID | None, UUID | None] = {}
    if pairs:
        versions = await session.execute(
            select(
                RewardRuleVersion.rule_id, RewardRuleVersion.version, RewardRuleVersion.snapshot
            ).where(tuple_(RewardRuleVersion.rule_id, RewardRuleVersion.version).in_(pairs))
        )
        snapshots = {(rule_id, version): snapshot for rule_id, version, snapshot in versions}
        found = await session.execute(
            select(Conversion.id, Conversion.referral_id).where(
                Conversion.id.in_({reward.conversion_id for reward in rewards} - {None})
            )
        )
        referrals = {conversion_id: referral_id for conversion_id, referral_id in found}
    out = []
    for reward in rewards:
        snapshot = snapshots.get((reward.rule_id, reward.rule_version), {})
        shown = reads_as(reward.entry_type, reward.status, reward.hold_until, now)
        reversed_because = None
        if shown == RewardStatus.REVERSED:
            # Only the system's own reason is shown: a merchant's note is for the merchant.
            reversed_because = "refund" if reward.reversal_reason == "refund" else "merchant"
        out.append(
            MeReward(
                id=reward.id,
                entry_type=reward.entry_type,
                kind=reward.kind,
                unit=reward.unit,
                amount=for_display(reward.amount, reward.unit),
                status=shown,
                why=_why(reward.entry_type, snapshot, reward.rule_version),
                rule=(
                    MeRewardRule(
                        id=reward.rule_id, name=snapshot.get("name"), version=reward.rule_version
                    )
                    if reward.rule_id is not None and reward.rule_version is not None
                    else None
                ),
                referral_id=referrals.get(reward.conversion_id),
                hold_until=reward.hold_until,
                approves_at=reward.hold_until if shown == RewardStatus.PENDING else None,
                approved_at=(
                    reward.hold_until
                    if shown != reward.status and shown == RewardStatus.APPROVED
                    else reward.approved_at
                ),
                paid_at=reward.paid_at,
                reversed_at=reward.reversed_at,
                reversed_because=reversed_because,
                created_at=reward.created_at,
            )
        )
    return out


async def list_rewards(
    session: AsyncSession, principal: ReferrerPrincipal, params: PageParams
) -> tuple[list[MeReward], str | None]:
    """The referrer's own ledger entries, oldest first, as a read shows them."""
    rows, next_cursor = await paginate(session, _own_rewards(principal), Reward, params)
    return await _rewards_out(session, rows), next_cursor


async def read_reward(
    session: AsyncSession, principal: ReferrerPrincipal, reward_id: UUID
) -> MeReward:
    query = _own_rewards(principal).where(Reward.id == reward_id)
    reward = await session.scalar(query)
    if reward is None:
        raise RewardNotFound()
    return (await _rewards_out(session, [reward]))[0]


async def read_balance(session: AsyncSession, principal: ReferrerPrincipal) -> Balance:
    """Pending, approved, paid, owed and payable, per currency (or points)."""
    referrer, _ = await own_referrer(session, principal)
    return await balance(session, referrer)
