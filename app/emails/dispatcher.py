"""Sends the email outbox: one message at a time, at most once.

Every replica runs one (like the webhook dispatcher). A message goes through three short
transactions and no transaction is open while SMTP talks:

1. claim: the next due `pending` row, locked with FOR UPDATE SKIP LOCKED (Postgres; SQLite has
   one writer), checked against the suppression list and the program's switches, rendered, and
   committed as `sending` (with `sending_since`) *before* a byte goes to the server;
2. the SMTP exchange (app.emails.smtp), with a Message-ID derived from the row;
3. record: `sent`; `pending` again with exponential backoff after a clear refusal (until the
   retry window ends, then `failed`); `failed` for a refused mailbox; `unknown` when the
   connection broke during DATA.

If the process dies between 1 and 3, the row stays `sending`; once the lease has passed, a round
marks it `unknown` and never sends it again: after a crash the service cannot know whether the
server took the message, and at most once is the promise. `unknown` rows are listed for ops
(GET /v1/programs/{id}/email-messages?status=unknown).
"""

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import is_postgres, utcnow
from app.core.retries import backoff, poll
from app.core.telemetry import EMAIL_MESSAGES
from app.emails import rendering
from app.emails.links import render_context, unsubscribe_link
from app.emails.models import EmailKind, EmailMessage, EmailTemplate, MessageStatus
from app.emails.outbox import is_suppressed
from app.emails.smtp import Outcome, SmtpConfig, SmtpSender, compose, envelope_sender
from app.programs.models import Program

logger = logging.getLogger("app.emails")


@dataclass(frozen=True)
class Job:
    message_id: UUID
    to_address: str
    data: bytes


class EmailDispatcher:
    """One per process; `run_once` is a round (tests call it directly), `run` loops."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.config = SmtpConfig.from_settings(settings)
        self._random = random.Random()
        # MAIL, RCPT and DATA (two waits) each within the timeout: past this, the sender died.
        self.lease = timedelta(seconds=4 * settings.smtp_timeout_seconds + 60)
        self.window = timedelta(hours=settings.email_retry_window_hours)

    async def run(self) -> None:
        await poll(
            self.run_once,
            interval_seconds=self.settings.email_dispatch_interval_seconds,
            batch_size=self.settings.email_dispatch_batch_size,
            logger=logger,
            what="email dispatch",
        )

    async def run_once(self, now: datetime | None = None) -> int:
        """Send up to a batch of due messages; returns how many were handled.

        `now` stands in for the clock (tests): what is due, leases, backoff.
        """

        def clock() -> datetime:
            return now or utcnow()

        await self._expire_interrupted(clock())
        if not await self._anything_due(clock()):
            return 0
        sender = SmtpSender(self.config)
        handled = 0
        try:
            while handled < self.settings.email_dispatch_batch_size:
                problem = await sender.ready()
                if problem is not None:
                    # Nothing was claimed: the messages wait, their attempts untouched.
                    logger.warning("SMTP server unavailable: %s", problem.detail)
                    break
                job = await self._claim(clock())
                if job is None:
                    break
                handled += 1
                if isinstance(job, Job):
                    outcome = await sender.send(
                        envelope_sender(self.settings), job.to_address, job.data
                    )
                    await self._record(job.message_id, outcome, clock())
        finally:
            await sender.close()
        return handled

    async def _anything_due(self, now: datetime) -> bool:
        async with self.sessionmaker() as session:
            found = await session.scalar(
                select(EmailMessage.id)
                .where(
                    EmailMessage.status == MessageStatus.PENDING,
                    EmailMessage.next_attempt_at <= now,
                )
                .limit(1)
            )
        return found is not None

    async def _expire_interrupted(self, now: datetime) -> None:
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(
                update(EmailMessage)
                .where(
                    EmailMessage.status == MessageStatus.SENDING,
                    EmailMessage.sending_since < now - self.lease,
                )
                .values(
                    status=MessageStatus.UNKNOWN,
                    error="interrupted during sending: outcome unknown, not sent again",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
        expired = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if expired:
            EMAIL_MESSAGES.labels("unknown").inc(expired)
            logger.warning("%d emails were interrupted while sending; marked unknown", expired)

    async def _claim(self, now: datetime) -> Job | bool | None:
        """The next due message as a Job (now `sending`); True when one was settled without
        sending (suppressed, expired, unrenderable); None when nothing is due."""
        query = (
            select(EmailMessage)
            .where(
                EmailMessage.status == MessageStatus.PENDING,
                EmailMessage.next_attempt_at <= now,
            )
            .order_by(EmailMessage.next_attempt_at, EmailMessage.id)
            .limit(1)
        )
        async with self.sessionmaker() as session, session.begin():
            if is_postgres(session):
                query = query.with_for_update(skip_locked=True)
            row = await session.scalar(query)
            if row is None:
                return None
            row.updated_at = now
            if row.created_at + self.window < now:
                self._settle(row, MessageStatus.FAILED, "the retry window ended before sending")
                return True
            template = await session.scalar(
                select(EmailTemplate).where(
                    EmailTemplate.program_id == row.program_id, EmailTemplate.kind == row.kind
                )
            )
            program = await session.get(Program, row.program_id)
            if (
                row.to_address is None
                or program is None
                or (template is not None and not template.enabled)
                or await is_suppressed(session, row.program_id, row.address_hash)
            ):
                self._settle(row, MessageStatus.SUPPRESSED, "unsubscribed, erased or turned off")
                row.to_address, row.context = None, {}
                return True
            try:
                data = self._message(row, program, template)
            except Exception:
                logger.exception("email %s could not be rendered", row.id)
                self._settle(row, MessageStatus.FAILED, "could not be rendered")
                return True
            row.status = MessageStatus.SENDING
            row.sending_since = now
            row.attempts += 1
            return Job(message_id=row.id, to_address=row.to_address, data=data)

    def _message(
        self, row: EmailMessage, program: Program, template: EmailTemplate | None
    ) -> bytes:
        assert row.to_address is not None
        url, token = unsubscribe_link(self.settings, row.program_id, row.address_hash)
        overrides = None
        if template is not None:
            overrides = {
                "subject": template.subject,
                "text": template.text_body,
                "html": template.html_body,
            }
        rendered = rendering.render(
            EmailKind(row.kind),
            render_context(self.settings, program, row.context, url),
            overrides,
            program_name=program.name,
            unsubscribe_url=url,
        )
        return compose(self.settings, row.id, row.to_address, rendered, url, token)

    def _settle(self, row: EmailMessage, status: MessageStatus, error: str) -> None:
        row.status, row.error = status, error
        EMAIL_MESSAGES.labels(status.value).inc()

    async def _record(self, message_id: UUID, outcome: Outcome, now: datetime) -> None:
        async with self.sessionmaker() as session, session.begin():
            row = await session.scalar(
                select(EmailMessage).where(EmailMessage.id == message_id).with_for_update()
            )
            if row is None:
                return
            row.updated_at = now
            row.smtp_status = outcome.smtp_status
            row.error = None if outcome.kind == "sent" else outcome.detail[:200]
            if outcome.kind == "sent":
                row.status, row.sent_at = MessageStatus.SENT, now
                label = "sent"
            elif outcome.kind == "retry":
                retry_at = now + backoff(
                    row.attempts,
                    self.settings.email_retry_base_seconds,
                    self.settings.email_retry_max_delay_seconds,
                    self._random,
                )
                if retry_at > row.created_at + self.window:
                    row.status, label = MessageStatus.FAILED, "failed"
                else:
                    row.status, row.next_attempt_at, label = (
                        MessageStatus.PENDING,
                        retry_at,
                        "retrying",
                    )
            else:
                row.status = MessageStatus(outcome.kind)
                label = outcome.kind
            EMAIL_MESSAGES.labels(label).inc()
            if label in ("failed", "unknown"):
                logger.warning("email %s %s: %s", row.id, label, outcome.detail)
