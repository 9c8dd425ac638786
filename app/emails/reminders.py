"""Reminders to referrers who have shared nothing: no click on their codes for N days.

A program opts in with `reminder_after_days` (N, off by default). The housekeeping loop of every
replica runs `queue_reminders`; a referrer enrolled at least N days ago whose codes got no click
in the last N days is reminded once per N-day period, counted from their enrolment (the
period is in the message's dedupe key, so replicas racing queue one email). Nobody is reminded
twice within N days.
"""

from datetime import datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.emails.models import EmailKind, EmailMessage
from app.emails.outbox import disabled_kinds, emails_on, queue_reminder
from app.programs.models import Program, ProgramStatus
from app.referrers.models import Code, Referrer
from app.tracking.models import Click

BATCH = 200


async def queue_reminders(session: AsyncSession, now: datetime, batch: int = BATCH) -> int:
    """Queue up to `batch` due reminders; returns how many were queued (call again if full)."""
    if not emails_on(session):
        return 0
    programs = await session.execute(
        select(Program.id, Program.reminder_after_days).where(
            Program.reminder_after_days.is_not(None), Program.status == ProgramStatus.ACTIVE
        )
    )
    queued = 0
    for program_id, days in programs.all():
        assert days is not None
        if queued >= batch:
            break
        if EmailKind.REMINDER in await disabled_kinds(session, program_id):
            continue
        since = now - timedelta(days=days)
        clicked = exists().where(Click.referrer_id == Referrer.id, Click.occurred_at > since)
        reminded = exists().where(
            EmailMessage.referrer_id == Referrer.id,
            EmailMessage.kind == EmailKind.REMINDER,
            EmailMessage.created_at > since,
        )
        due = await session.execute(
            select(Referrer, Code.code)
            .join(Code, (Code.referrer_id == Referrer.id) & Code.is_default.is_(True))
            .where(
                Referrer.program_id == program_id,
                Referrer.email.is_not(None),
                Referrer.created_at <= since,
                ~clicked,
                ~reminded,
            )
            .order_by(Referrer.created_at, Referrer.id)
            .limit(batch - queued)
        )
        for referrer, code in due.all():
            period = (now - referrer.created_at) // timedelta(days=days)
            queued += await queue_reminder(session, referrer, code, period, days)
    return queued
