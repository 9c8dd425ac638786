"""Who earned a purchase: explicit code, then explicit click, then the customer's own touches.

Touches from the customer's history count inside the program's window and are picked by the
program's model (last_touch or first_touch). Every candidate is kept with the reason it won or
lost, so each conversion can explain its attribution.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.programs.models import AttributionModel, Program
from app.referrers.codes import normalize
from app.referrers.models import Code, Referrer
from app.tracking.models import Click, Referral

MAX_HISTORY_CLICKS = 100


@dataclass(frozen=True)
class Touch:
    kind: str  # code / click / redemption
    source: str  # explicit / customer_history
    id: str
    referrer_id: UUID | None
    code_id: UUID | None
    code: str | None
    occurred_at: datetime | None
    click_id: UUID | None = None
    outcome: str = "lost"
    reason: str = ""

    def lose(self, reason: str) -> "Touch":
        return replace(self, outcome="lost", reason=reason)


@dataclass(frozen=True)
class Decision:
    winner: Touch | None
    candidates: list[Touch]
    # Won: explicit_code, explicit_click, last_touch, first_touch. Not: UNATTRIBUTED_REASONS.
    reason: str


# Why a purchase was not attributed, most telling first: the customer's own touch; a touch that
# would have counted inside the window; touches that could never count (a bot, after the
# purchase, an unknown or disabled code…); and `organic`, which means no touch at all.
UNATTRIBUTED_REASONS = ("self_referral", "outside_window", "no_eligible_touch", "organic")


@dataclass(frozen=True)
class Purchase:
    program: Program
    customer_id: str
    email: str | None
    occurred_at: datetime
    code: str | None
    click_id: UUID | None


async def attribute(session: AsyncSession, purchase: Purchase) -> Decision:
    """Decide which touch earned the purchase; see the module docstring for the order."""
    program = purchase.program
    window_start = purchase.occurred_at - timedelta(days=program.attribution_window_days)
    referrers: dict[UUID, Referrer] = {}

    async def referrer_of(referrer_id: UUID) -> Referrer:
        if referrer_id not in referrers:
            found = await session.get(Referrer, referrer_id)
            assert found is not None
            referrers[referrer_id] = found
        return referrers[referrer_id]

    async def disqualification(touch: Touch, *, windowed: bool) -> str | None:
        if touch.occurred_at is not None and windowed:
            if touch.occurred_at > purchase.occurred_at:
                return "after_conversion"
            if touch.occurred_at < window_start:
                return "outside_window"
        assert touch.referrer_id is not None
        referrer = await referrer_of(touch.referrer_id)
        if referrer.external_id == purchase.customer_id or (
            purchase.email and referrer.email and referrer.email.lower() == purchase.email.lower()
        ):
            return "self_referral"
        return None

    explicit: list[Touch] = []
    if purchase.code:
        explicit.append(await _code_touch(session, program, purchase.code, purchase.occurred_at))
    if purchase.click_id:
        explicit.append(await _click_touch(session, program, purchase.click_id))
    explicit_ids = {touch.id for touch in explicit}
    history = [
        touch
        for touch in await _history_touches(session, program, purchase.customer_id)
        if touch.id not in explicit_ids
    ]

    decided: list[Touch] = []
    winner: Touch | None = None
    for touch in explicit:
        if touch.reason:
            decided.append(touch)
            continue
        lost = await disqualification(touch, windowed=touch.kind == "click")
        if lost:
            decided.append(touch.lose(lost))
        elif winner is None:
            winner = replace(touch, outcome="won", reason=f"explicit_{touch.kind}")
            decided.append(winner)
        else:
            decided.append(touch.lose("lower_priority"))

    eligible: list[Touch] = []
    for touch in history:
        if touch.reason:
            decided.append(touch)
            continue
        lost = await disqualification(touch, windowed=True)
        if lost:
            decided.append(touch.lose(lost))
        else:
            eligible.append(touch)
    if eligible:
        pick = max if program.attribution_model == AttributionModel.LAST_TOUCH else min
        chosen = pick(eligible, key=lambda t: (t.occurred_at, t.kind == "redemption"))
        # History loses to an explicit winner by priority, to another history touch by the model.
        explicit_won = winner is not None
        for touch in eligible:
            if not explicit_won and touch is chosen:
                winner = replace(touch, outcome="won", reason=program.attribution_model)
                decided.append(winner)
            else:
                decided.append(touch.lose("lower_priority" if explicit_won else "model"))

    if winner is not None:
        return Decision(winner=winner, candidates=decided, reason=winner.reason)
    return Decision(winner=None, candidates=decided, reason=unattributed_reason(decided))


def unattributed_reason(candidates: list[Touch]) -> str:
    """The reason of a purchase that no touch won: see UNATTRIBUTED_REASONS."""
    if not candidates:
        return "organic"
    lost = {touch.reason for touch in candidates}
    for reason in ("self_referral", "outside_window"):
        if reason in lost:
            return reason
    return "no_eligible_touch"


async def _code_touch(session: AsyncSession, program: Program, text: str, at: datetime) -> Touch:
    code = await session.scalar(select(Code).where(Code.normalized == normalize(text)))
    if code is None or code.program_id != program.id:
        # Another program's code is treated exactly like an unknown one.
        return Touch(
            "code", "explicit", normalize(text), None, None, text, None, reason="unknown_code"
        )
    touch = Touch("code", "explicit", str(code.id), code.referrer_id, code.id, code.code, None)
    if code.disabled:
        return touch.lose("code_disabled")
    if code.expires_at is not None and code.expires_at <= at:
        return touch.lose("code_expired")
    return touch


async def _click_touch(session: AsyncSession, program: Program, click_id: UUID) -> Touch:
    row = (
        await session.execute(
            select(Click, Code.code)
            .join(Code, Code.id == Click.code_id)
            .where(Click.id == click_id)
        )
    ).first()
    if row is None or row[0].program_id != program.id:
        return Touch(
            "click", "explicit", str(click_id), None, None, None, None, reason="unknown_click"
        )
    return _from_click(row[0], row[1], "explicit")


def _from_click(click: Click, code_text: str, source: str) -> Touch:
    touch = Touch(
        "click",
        source,
        str(click.id),
        click.referrer_id,
        click.code_id,
        code_text,
        click.occurred_at,
        click_id=click.id,
    )
    if click.is_bot:
        return touch.lose("bot")
    if not click.attributable:
        return touch.lose("not_attributable")
    return touch


async def _history_touches(
    session: AsyncSession, program: Program, customer_id: str
) -> list[Touch]:
    touches: list[Touch] = []
    referral_row = (
        await session.execute(
            select(Referral, Code.code)
            .join(Code, Code.id == Referral.code_id)
            .where(Referral.program_id == program.id, Referral.customer_id == customer_id)
        )
    ).first()
    if referral_row is not None:
        referral, code_text = referral_row
        # A referral made by an earlier purchase is that purchase's use of the code.
        touches.append(
            Touch(
                "redemption" if referral.source == "redemption" else "code",
                "customer_history",
                str(referral.id),
                referral.referrer_id,
                referral.code_id,
                code_text,
                referral.occurred_at,
                click_id=referral.click_id,
            )
        )
    clicks = await session.execute(
        select(Click, Code.code)
        .join(Code, Code.id == Click.code_id)
        .where(Click.program_id == program.id, Click.customer_id == customer_id)
        .order_by(Click.occurred_at.desc())
        .limit(MAX_HISTORY_CLICKS)
    )
    touches.extend(_from_click(click, code_text, "customer_history") for click, code_text in clicks)
    return touches
