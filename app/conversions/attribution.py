"""Who earned a purchase: explicit code, then explicit click, then the customer's own touches.

Touches from the customer's history count inside the program's window and are picked by the
program's model (last_touch or first_touch). Every candidate is kept with the reason it won or
lost, so each conversion can explain its attribution.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    Uuid,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import UTCDateTime
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
    payee: "Payee | None" = None  # the winner's referrer
    click_has_customer: bool = False  # the winning click is already some customer's


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


@dataclass(frozen=True)
class Payee:
    """A referrer as the purchase needs them: who they are at the merchant, for the
    self-referral check and the reward's recipient."""

    id: UUID
    external_id: str
    email: str | None


async def attribute(session: AsyncSession, purchase: Purchase) -> Decision:
    """Decide which touch earned the purchase; see the module docstring for the order.

    Every candidate and its referrer comes from one statement (`_candidates`).
    """
    program = purchase.program
    window_start = purchase.occurred_at - timedelta(days=program.attribution_window_days)
    explicit, history, payees, click_customers = await _candidates(session, purchase)

    def disqualification(touch: Touch, *, windowed: bool) -> str | None:
        if touch.occurred_at is not None and windowed:
            if touch.occurred_at > purchase.occurred_at:
                return "after_conversion"
            if touch.occurred_at < window_start:
                return "outside_window"
        assert touch.referrer_id is not None
        referrer = payees[touch.referrer_id]
        if referrer.external_id == purchase.customer_id or (
            purchase.email and referrer.email and referrer.email.lower() == purchase.email.lower()
        ):
            return "self_referral"
        return None

    explicit_ids = {touch.id for touch in explicit}
    history = [touch for touch in history if touch.id not in explicit_ids]

    decided: list[Touch] = []
    winner: Touch | None = None
    for touch in explicit:
        if touch.reason:
            decided.append(touch)
            continue
        lost = disqualification(touch, windowed=touch.kind == "click")
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
        lost = disqualification(touch, windowed=True)
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
        assert winner.referrer_id is not None
        return Decision(
            winner=winner,
            candidates=decided,
            reason=winner.reason,
            payee=payees[winner.referrer_id],
            click_has_customer=winner.click_id is not None
            and click_customers.get(winner.click_id) is not None,
        )
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


# The parts of the candidates statement, in the order the touches are decided.
CODE, CLICK, REFERRAL, HISTORY_CLICK = 0, 1, 2, 3


def _none(type_: Any) -> Any:
    return cast(null(), type_)


def _part(
    part: int,
    *,
    id_: Any,
    program_id: Any,
    referrer_id: Any,
    code_id: Any,
    code: Any,
    occurred_at: Any = None,
    click_id: Any = None,
    source: Any = None,
    disabled: Any = None,
    expires_at: Any = None,
    is_bot: Any = None,
    attributable: Any = None,
    customer_id: Any = None,
) -> Any:
    """One part of the candidates statement: the same typed columns whatever the part."""
    return select(
        literal_column(str(part), Integer).label("part"),
        id_.label("id"),
        program_id.label("program_id"),
        referrer_id.label("referrer_id"),
        code_id.label("code_id"),
        code.label("code"),
        (_none(UTCDateTime()) if occurred_at is None else occurred_at).label("occurred_at"),
        (_none(Uuid()) if click_id is None else click_id).label("click_id"),
        (_none(String(16)) if source is None else source).label("source"),
        (_none(Boolean()) if disabled is None else disabled).label("disabled"),
        (_none(UTCDateTime()) if expires_at is None else expires_at).label("expires_at"),
        (_none(Boolean()) if is_bot is None else is_bot).label("is_bot"),
        (_none(Boolean()) if attributable is None else attributable).label("attributable"),
        (_none(String(200)) if customer_id is None else customer_id).label("customer_id"),
    )


def _click_part(part: int) -> Any:
    return _part(
        part,
        id_=Click.id,
        program_id=Click.program_id,
        referrer_id=Click.referrer_id,
        code_id=Click.code_id,
        code=Code.code,
        occurred_at=Click.occurred_at,
        click_id=Click.id,
        is_bot=Click.is_bot,
        attributable=Click.attributable,
        customer_id=Click.customer_id,
    ).join(Code, Code.id == Click.code_id)


def _candidates_statement(with_code: bool, with_click: bool) -> Any:
    """The candidates statement of a purchase with or without a code and a click: built once
    per process (parameters: normalized, click_id, program_id, customer_id)."""
    parts: list[Any] = []
    if with_code:
        parts.append(
            _part(
                CODE,
                id_=Code.id,
                program_id=Code.program_id,
                referrer_id=Code.referrer_id,
                code_id=Code.id,
                code=Code.code,
                disabled=Code.disabled,
                expires_at=Code.expires_at,
            ).where(Code.normalized == bindparam("normalized", type_=String(64)))
        )
    if with_click:
        parts.append(_click_part(CLICK).where(Click.id == bindparam("click_id", type_=Uuid())))
    program_id = bindparam("program_id", type_=Uuid())
    customer_id = bindparam("customer_id", type_=String(200))
    parts.append(
        _part(
            REFERRAL,
            id_=Referral.id,
            program_id=Referral.program_id,
            referrer_id=Referral.referrer_id,
            code_id=Referral.code_id,
            code=Code.code,
            occurred_at=Referral.occurred_at,
            click_id=Referral.click_id,
            source=Referral.source,
        )
        .join(Code, Code.id == Referral.code_id)
        .where(Referral.program_id == program_id, Referral.customer_id == customer_id)
    )
    latest = (
        _click_part(HISTORY_CLICK)
        .where(Click.program_id == program_id, Click.customer_id == customer_id)
        .order_by(Click.occurred_at.desc())
        .limit(MAX_HISTORY_CLICKS)
        .subquery()
    )
    parts.append(select(latest))
    touches = union_all(*parts).subquery()
    return (
        select(touches, Referrer.external_id, Referrer.email)
        .outerjoin(Referrer, Referrer.id == touches.c.referrer_id)
        .order_by(touches.c.part, touches.c.occurred_at.desc())
    )


_STATEMENTS: dict[tuple[bool, bool], Any] = {}


async def _candidates(
    session: AsyncSession, purchase: Purchase
) -> tuple[list[Touch], list[Touch], dict[UUID, Payee], dict[UUID, str | None]]:
    """The explicit touches (code, click), the customer's history (their referral, their latest
    clicks) and the referrers of all of them: one statement."""
    program = purchase.program
    shape = (bool(purchase.code), bool(purchase.click_id))
    statement = _STATEMENTS.get(shape)
    if statement is None:
        statement = _STATEMENTS[shape] = _candidates_statement(*shape)
    params: dict[str, Any] = {"program_id": program.id, "customer_id": purchase.customer_id}
    if purchase.code:
        params["normalized"] = normalize(purchase.code)
    if purchase.click_id:
        params["click_id"] = purchase.click_id
    rows = await session.execute(statement, params)
    explicit: list[Touch] = []
    history: list[Touch] = []
    payees: dict[UUID, Payee] = {}
    click_customers: dict[UUID, str | None] = {}
    for row in rows:
        if row.referrer_id is not None and row.external_id is not None:
            payees[row.referrer_id] = Payee(row.referrer_id, row.external_id, row.email)
        if row.part == CODE:
            explicit.append(_code_touch(program, purchase.code or "", purchase.occurred_at, row))
        elif row.part == CLICK:
            if row.program_id == program.id:
                explicit.append(_from_click(row, "explicit"))
                click_customers[row.id] = row.customer_id
        elif row.part == REFERRAL:
            # A referral made by an earlier purchase is that purchase's use of the code.
            history.append(
                Touch(
                    "redemption" if row.source == "redemption" else "code",
                    "customer_history",
                    str(row.id),
                    row.referrer_id,
                    row.code_id,
                    row.code,
                    row.occurred_at,
                    click_id=row.click_id,
                )
            )
        else:
            history.append(_from_click(row, "customer_history"))
            click_customers[row.id] = row.customer_id
    if purchase.code and not any(t.kind == "code" for t in explicit):
        explicit.insert(0, _unknown_code(purchase.code))
    if purchase.click_id and not any(t.kind == "click" for t in explicit):
        text = str(purchase.click_id)
        explicit.append(
            Touch("click", "explicit", text, None, None, None, None, reason="unknown_click")
        )
    return explicit, history, payees, click_customers


def _unknown_code(text: str) -> Touch:
    return Touch("code", "explicit", normalize(text), None, None, text, None, reason="unknown_code")


def _code_touch(program: Program, text: str, at: datetime, row: Any) -> Touch:
    if row.program_id != program.id:
        # Another program's code is treated exactly like an unknown one.
        return _unknown_code(text)
    touch = Touch("code", "explicit", str(row.id), row.referrer_id, row.id, row.code, None)
    if row.disabled:
        return touch.lose("code_disabled")
    if row.expires_at is not None and row.expires_at <= at:
        return touch.lose("code_expired")
    return touch


def _from_click(row: Any, source: str) -> Touch:
    touch = Touch(
        "click",
        source,
        str(row.id),
        row.referrer_id,
        row.code_id,
        row.code,
        row.occurred_at,
        click_id=row.id,
    )
    if row.is_bot:
        return touch.lose("bot")
    if not row.attributable:
        return touch.lose("not_attributable")
    return touch
