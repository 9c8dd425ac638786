"""The batch exports: a CSV of every line, and PayPal Payouts' bulk upload file.

These two GET answers are the only place payout details are written whole (they are what the
merchant pays from); a GET is never stored as an Idempotency-Key answer.

PayPal's format (Payouts Web, "Create input file": developer.paypal.com/payouts/use-payouts/
send-money/use-web-ui, read 2026-12-04): no header row; one payout a row: recipient (email,
mobile number or PayerID), amount, currency (one per file), customer ID (optional, unique, at
most 30 characters, no spaces), note to the recipient (at most 400 characters), recipient wallet
(PAYPAL). At most 5,000 rows a file: a longer batch is exported in parts (`?part=2`, …).
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal
from app.core.csv import CsvTable
from app.core.money import quantize
from app.payouts.batches import LineRow, get_batch, line_rows
from app.payouts.states import BatchKind, LineStatus, PayoutMethod
from app.programs.models import Program

PAYPAL_ROWS_PER_FILE = 5000
PAYPAL_NOTE_LENGTH = 400

PAYOUT_COLUMNS = (
    "batch_id",
    "line",
    "status",
    "referrer_id",
    "external_id",
    "amount",
    "currency",
    "reward_count",
    "payout_method",
    "payout_recipient",
    "batch_status",
    "reference",
    "paid_at",
)
DONATION_COLUMNS = (
    "batch_id",
    "line",
    "status",
    "charity_id",
    "charity_name",
    "charity_registration_number",
    "referrer_id",
    "external_id",
    "donor_name",
    "donor_email",
    "amount",
    "currency",
    "reward_count",
    "batch_status",
    "reference",
    "paid_at",
)


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def customer_id(batch_id: UUID, position: int) -> str:
    """The PayPal customer ID of a line: unique, short, no spaces (12 hex digits, a number)."""
    return f"{batch_id.hex[:12]}-{position}"


async def batch_csv(
    session: AsyncSession, principal: Principal, program_id: UUID, kind: BatchKind, batch_id: UUID
) -> CsvTable:
    batch = await get_batch(session, principal, program_id, kind, batch_id)
    rows = await line_rows(session, batch)
    common = (batch.status.value, batch.reference, _when(batch.paid_at))
    if kind == BatchKind.PAYOUT:
        table = [
            (
                str(batch.id),
                row.line.position,
                row.line.status.value,
                str(row.referrer.id),
                row.referrer.external_id,
                str(quantize(row.line.amount, batch.currency)),
                batch.currency,
                row.line.reward_count,
                row.line.payout_method,
                row.referrer.payout_recipient if row.line.payout_method else None,
                *common,
            )
            for row in rows
        ]
        return CsvTable(f"payout-batch-{batch.id}.csv", PAYOUT_COLUMNS, table)
    return CsvTable(
        f"donation-batch-{batch.id}.csv",
        DONATION_COLUMNS,
        [_donation_row(batch, row, common) for row in rows],
    )


def _donation_row(batch: Any, row: LineRow, common: tuple[Any, ...]) -> tuple[Any, ...]:
    charity = row.charity
    return (
        str(batch.id),
        row.line.position,
        row.line.status.value,
        str(charity.id) if charity else None,
        charity.name if charity else None,
        charity.registration_number if charity else None,
        str(row.referrer.id),
        row.referrer.external_id,
        row.referrer.name,
        row.referrer.email,
        str(quantize(row.line.amount, batch.currency)),
        batch.currency,
        row.line.reward_count,
        *common,
    )


async def paypal_csv(
    session: AsyncSession, principal: Principal, program_id: UUID, batch_id: UUID, part: int
) -> tuple[CsvTable, int]:
    """The batch's PayPal lines (included, paid to PayPal) as PayPal's bulk upload rows; the
    number of files the batch takes. Lines paid another way are in the CSV export only."""
    batch = await get_batch(session, principal, program_id, BatchKind.PAYOUT, batch_id)
    program = await session.get(Program, batch.program_id)
    assert program is not None
    note = f"{program.name}: referral rewards"[:PAYPAL_NOTE_LENGTH]
    lines = [
        row
        for row in await line_rows(session, batch)
        if row.line.status == LineStatus.INCLUDED
        and row.line.payout_method == PayoutMethod.PAYPAL
        and row.referrer.payout_method == PayoutMethod.PAYPAL
        and row.referrer.payout_recipient
    ]
    parts = max(1, -(-len(lines) // PAYPAL_ROWS_PER_FILE))
    chosen = lines[(part - 1) * PAYPAL_ROWS_PER_FILE : part * PAYPAL_ROWS_PER_FILE]
    table = [
        (
            row.referrer.payout_recipient,
            str(quantize(row.line.amount, batch.currency)),
            batch.currency,
            customer_id(batch.id, row.line.position),
            note,
            "PAYPAL",
        )
        for row in chosen
    ]
    suffix = f"-part{part}" if parts > 1 else ""
    return CsvTable(f"paypal-payouts-{batch.id}{suffix}.csv", (), table), parts
