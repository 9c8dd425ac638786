"""Payout and donation batches: collect the approved balances, settle them, or release them.

Creating a batch locks the program's row (`FOR NO KEY UPDATE`: purchases still go through) and
then every candidate entry (`FOR UPDATE`), and sets `rewards.payout_batch_id`: two batches
created at once run one after the other, and the second finds only what the first left.
A reward of an open batch is settled only by the batch (the ledger refuses to pay or reverse
it alone, and a refund claws it back with a negative entry that nets out of the next batch).
"""

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, get_visible
from app.core.db import utcnow
from app.core.errors import AppError
from app.core.money import has_valid_precision, minor_unit, quantize
from app.core.pagination import PageParams, paginate
from app.payouts.details import mask
from app.payouts.due import due
from app.payouts.models import Charity, PayoutBatch, PayoutLine
from app.payouts.schemas import (
    BatchCreate,
    BatchLine,
    BatchOut,
    BatchSummary,
    CharityChoice,
    CharityTotal,
)
from app.payouts.states import (
    BatchKind,
    BatchMove,
    BatchStatus,
    LineStatus,
    PayoutMethod,
    batch_moved,
)
from app.programs.models import Program
from app.programs.service import ProgramNotFound, get_program
from app.referrers.models import Referrer
from app.rewards.models import Reward
from app.rewards.states import (
    Action,
    FulfilmentMethod,
    RewardStatus,
    next_status,
)
from app.webhooks.outbox import emit_rewards

METHOD_OF = {BatchKind.PAYOUT: FulfilmentMethod.CASH, BatchKind.DONATION: FulfilmentMethod.DONATION}


class BatchNotFound(AppError):
    status, code, title = 404, "payout_batch_not_found", "Payout batch not found"


class CurrencyMismatch(AppError):
    status, code, title = 422, "currency_mismatch", "The currency is not the program's"


class InvalidBatch(AppError):
    status, code, title = 422, "invalid_batch", "The batch request is not valid"


class EmptyBatch(AppError):
    status, code, title = 409, "empty_batch", "Nothing is due for a batch"


CREATE_ERRORS: tuple[type[AppError], ...] = (
    ProgramNotFound,
    CurrencyMismatch,
    InvalidBatch,
    EmptyBatch,
)


async def _locked_program(session: AsyncSession, principal: Principal, program_id: UUID) -> Program:
    query = select(Program).where(Program.id == program_id).with_for_update(key_share=True)
    return await get_visible(session, query, principal, ProgramNotFound, Program.id)


@dataclass
class _Owed:
    referrer: Referrer
    entries: list[Reward]

    @property
    def net(self) -> Decimal:
        return sum((entry.amount for entry in self.entries), Decimal(0))


def _line_status(kind: BatchKind, referrer: Referrer) -> LineStatus:
    if kind == BatchKind.DONATION:
        return LineStatus.INCLUDED if referrer.charity_id is not None else LineStatus.NO_CHARITY
    if referrer.payout_method and referrer.payout_recipient:
        return LineStatus.INCLUDED
    return LineStatus.NO_PAYOUT_DETAILS


async def create_batch(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    kind: BatchKind,
    data: BatchCreate,
) -> BatchOut:
    """Collect every referrer's net balance due by the cut-off into a new open batch."""
    program = await _locked_program(session, principal, program_id)
    if data.currency != program.currency:
        raise CurrencyMismatch(
            f"The program counts in {program.currency}: a batch of it is in {program.currency}."
        )
    minimum = data.minimum_amount
    if minimum is not None and not has_valid_precision(minimum, program.currency):
        raise InvalidBatch(
            f"minimum_amount has more decimals than {program.currency} allows "
            f"({minor_unit(program.currency)})."
        )
    now = utcnow()
    cutoff = min(data.cutoff, now) if data.cutoff is not None else now
    entries = list(
        await session.scalars(
            select(Reward)
            .where(due(program.id, METHOD_OF[kind], program.currency, cutoff))
            .order_by(Reward.id)
            .with_for_update()
        )
    )
    owed = await _owed_by_referrer(session, entries)
    included: list[_Owed] = []
    left_out: list[tuple[_Owed, LineStatus]] = []
    for each in owed:
        net = each.net
        if net <= 0 or (minimum is not None and net < minimum):
            continue  # nothing owed yet (clawbacks ahead), or below the minimum: a later batch
        status = _line_status(kind, each.referrer)
        (
            included.append(each)
            if status == LineStatus.INCLUDED
            else left_out.append((each, status))
        )
    if not included:
        waiting = f"; {len(left_out)} referrers are owed but have no " + (
            "charity chosen" if kind == BatchKind.DONATION else "payout details"
        )
        raise EmptyBatch(
            f"No referrer has a {METHOD_OF[kind]} balance of at least "
            f"{minimum or 'any amount'} {program.currency} due by {cutoff.isoformat()}"
            + (waiting if left_out else "")
            + "."
        )
    batch = PayoutBatch(
        created_at=now,
        updated_at=now,
        program_id=program.id,
        kind=kind,
        status=BatchStatus.OPEN,
        currency=program.currency,
        minimum_amount=minimum,
        cutoff=data.cutoff,
        total=sum((each.net for each in included), Decimal(0)),
        reward_count=sum(len(each.entries) for each in included),
    )
    session.add(batch)
    await session.flush()
    rows = [(each, LineStatus.INCLUDED) for each in included] + left_out
    for position, (each, status) in enumerate(rows, start=1):
        session.add(
            PayoutLine(
                created_at=now,
                batch_id=batch.id,
                referrer_id=each.referrer.id,
                charity_id=each.referrer.charity_id if kind == BatchKind.DONATION else None,
                status=status,
                payout_method=each.referrer.payout_method if kind == BatchKind.PAYOUT else None,
                amount=each.net,
                reward_count=len(each.entries),
                position=position,
            )
        )
    released: list[Reward] = []
    for each in included:
        for entry in each.entries:
            if entry.status == RewardStatus.PENDING:
                entry.status = next_status(entry.entry_type, entry.status, Action.RELEASE)
                entry.approved_at = entry.hold_until
                released.append(entry)
            entry.payout_batch_id = batch.id
    await session.flush()
    await emit_rewards(session, "reward.approved", released)
    return await batch_out(session, batch)


async def _owed_by_referrer(session: AsyncSession, entries: list[Reward]) -> list[_Owed]:
    """The entries per referrer, ordered by the referrer's external id (the lines' order)."""
    grouped: dict[UUID, list[Reward]] = defaultdict(list)
    for entry in entries:
        grouped[entry.referrer_id].append(entry)
    if not grouped:
        return []
    referrers = await session.scalars(select(Referrer).where(Referrer.id.in_(grouped)))
    owed = [_Owed(referrer, grouped[referrer.id]) for referrer in referrers]
    return sorted(owed, key=lambda each: (each.referrer.external_id, each.referrer.id))


async def get_batch(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    kind: BatchKind,
    batch_id: UUID,
    *,
    for_update: bool = False,
) -> PayoutBatch:
    query = select(PayoutBatch).where(
        PayoutBatch.id == batch_id, PayoutBatch.program_id == program_id, PayoutBatch.kind == kind
    )
    if for_update:
        query = query.with_for_update()
    query = query.execution_options(populate_existing=True)
    return await get_visible(session, query, principal, BatchNotFound, PayoutBatch.program_id)


@dataclass(frozen=True)
class LineRow:
    """A line with its referrer and charity, for the answer and the exports."""

    line: PayoutLine
    referrer: Referrer
    charity: Charity | None


async def line_rows(session: AsyncSession, batch: PayoutBatch) -> list[LineRow]:
    rows = await session.execute(
        select(PayoutLine, Referrer, Charity)
        .join(Referrer, Referrer.id == PayoutLine.referrer_id)
        .outerjoin(Charity, Charity.id == PayoutLine.charity_id)
        .where(PayoutLine.batch_id == batch.id)
        .order_by(PayoutLine.position)
        .execution_options(populate_existing=True)
    )
    return [LineRow(line, referrer, charity) for line, referrer, charity in rows]


def _line_out(row: LineRow, currency: str) -> BatchLine:
    method = row.line.payout_method
    return BatchLine(
        referrer_id=row.referrer.id,
        external_id=row.referrer.external_id,
        status=row.line.status,
        amount=quantize(row.line.amount, currency),
        reward_count=row.line.reward_count,
        payout_method=PayoutMethod(method) if method else None,
        payout_recipient=mask(row.referrer.payout_recipient) if method else None,
        charity_id=row.line.charity_id,
    )


async def batch_out(session: AsyncSession, batch: PayoutBatch) -> BatchOut:
    rows = await line_rows(session, batch)
    currency = batch.currency
    lines = [_line_out(row, currency) for row in rows if row.line.status == LineStatus.INCLUDED]
    left_out = [_line_out(row, currency) for row in rows if row.line.status != LineStatus.INCLUDED]
    totals: dict[UUID, CharityTotal] = {}
    for row in rows:
        if row.charity is None or row.line.status != LineStatus.INCLUDED:
            continue
        found = totals.get(row.charity.id) or CharityTotal(
            charity=CharityChoice.model_validate(row.charity), amount=Decimal(0), donors=0
        )
        totals[row.charity.id] = found.model_copy(
            update={"amount": found.amount + row.line.amount, "donors": found.donors + 1}
        )
    return BatchOut(
        id=batch.id,
        program_id=batch.program_id,
        kind=batch.kind,
        status=batch.status,
        currency=currency,
        minimum_amount=(
            quantize(batch.minimum_amount, currency) if batch.minimum_amount is not None else None
        ),
        cutoff=batch.cutoff,
        total=quantize(batch.total, currency),
        reward_count=batch.reward_count,
        reference=batch.reference,
        lines=lines,
        left_out=left_out,
        charities=[
            total.model_copy(update={"amount": quantize(total.amount, currency)})
            for total in sorted(totals.values(), key=lambda t: t.charity.name)
        ],
        created_at=batch.created_at,
        paid_at=batch.paid_at,
        cancelled_at=batch.cancelled_at,
    )


async def list_batches(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    kind: BatchKind,
    status: BatchStatus | None,
    params: PageParams,
) -> tuple[list[BatchSummary], str | None]:
    """The program's batches of that kind, oldest first (`?status=open`: what is to be paid)."""
    program = await get_program(session, principal, program_id)
    query = select(PayoutBatch).where(
        PayoutBatch.program_id == program.id, PayoutBatch.kind == kind
    )
    if status is not None:
        query = query.where(PayoutBatch.status == status)
    rows, next_cursor = await paginate(session, query, PayoutBatch, params)
    return [_summary(row) for row in rows], next_cursor


def _summary(batch: PayoutBatch) -> BatchSummary:
    summary = BatchSummary.model_validate(batch)
    return summary.model_copy(update={"total": quantize(batch.total, batch.currency)})


async def read_batch(
    session: AsyncSession, principal: Principal, program_id: UUID, kind: BatchKind, batch_id: UUID
) -> BatchOut:
    return await batch_out(session, await get_batch(session, principal, program_id, kind, batch_id))


async def mark_paid(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    kind: BatchKind,
    batch_id: UUID,
    reference: str,
) -> BatchOut:
    """Every entry of the batch approved → paid with the batch's reference, in this one
    transaction (through the ledger's transitions); `reward.paid` for each, as by hand."""
    batch = await get_batch(session, principal, program_id, kind, batch_id, for_update=True)
    target = batch_moved(batch.status, BatchMove.PAY)
    entries = list(
        await session.scalars(
            select(Reward)
            .where(Reward.payout_batch_id == batch.id)
            .order_by(Reward.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    now = utcnow()
    for entry in entries:
        entry.status = next_status(entry.entry_type, entry.status, Action.PAY)
        entry.paid_at = now
        entry.payout_reference = reference
    batch.status, batch.reference, batch.paid_at, batch.updated_at = target, reference, now, now
    await session.flush()
    await emit_rewards(session, "reward.paid", entries)
    return await batch_out(session, batch)


async def cancel(
    session: AsyncSession, principal: Principal, program_id: UUID, kind: BatchKind, batch_id: UUID
) -> BatchOut:
    """The batch will not be paid: its entries leave it (still approved) for a later batch."""
    batch = await get_batch(session, principal, program_id, kind, batch_id, for_update=True)
    target = batch_moved(batch.status, BatchMove.CANCEL)
    now = utcnow()
    await session.execute(
        update(Reward)
        .where(Reward.payout_batch_id == batch.id, Reward.status != RewardStatus.PAID)
        .values(payout_batch_id=None)
        .execution_options(synchronize_session=False)
    )
    batch.status, batch.cancelled_at, batch.updated_at = target, now, now
    await session.flush()
    return await batch_out(session, batch)
