"""A program's email templates (overrides, preview), its outbox as ops see it, unsubscribing,
and forgetting an erased person's address."""

from uuid import UUID, uuid4

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal
from app.core.config import Settings
from app.core.db import insert_ignoring_conflicts, utcnow
from app.core.errors import AppError
from app.core.pagination import PageParams, paginate
from app.emails import rendering
from app.emails.models import (
    EmailKind,
    EmailMessage,
    EmailSuppression,
    EmailTemplate,
    MessageStatus,
)
from app.emails.schemas import (
    EmailMessageOut,
    EmailPreviewIn,
    EmailPreviewOut,
    EmailTemplateOut,
    EmailTemplateSet,
    Part,
)
from app.emails.tokens import address_hash, read_token
from app.programs.models import Program
from app.programs.service import get_program
from app.referrers.models import Referrer
from app.tracking.models import Referral


class InvalidUnsubscribeToken(AppError):
    status, code, title = 400, "invalid_unsubscribe_token", "The unsubscribe link is not valid"


def _template_out(kind: EmailKind, row: EmailTemplate | None) -> EmailTemplateOut:
    own: dict[Part, str | None] = {
        "subject": row.subject if row else None,
        "text": row.text_body if row else None,
        "html": row.html_body if row else None,
    }
    return EmailTemplateOut(
        event=kind,
        subject=own["subject"] or rendering.default_source(kind, "subject"),
        text=own["text"] or rendering.default_source(kind, "text"),
        html=own["html"] or rendering.default_source(kind, "html"),
        enabled=row.enabled if row else True,
        overridden=[part for part, value in own.items() if value is not None],
        updated_at=row.updated_at if row else None,
    )


async def _own_template(
    session: AsyncSession, program_id: UUID, kind: EmailKind, *, for_update: bool = False
) -> EmailTemplate | None:
    query = select(EmailTemplate).where(
        EmailTemplate.program_id == program_id, EmailTemplate.kind == kind
    )
    if for_update:
        query = query.with_for_update()
    return await session.scalar(query)


async def list_templates(
    session: AsyncSession, principal: Principal, program_id: UUID
) -> list[EmailTemplateOut]:
    """Every kind of email of the program: its templates (own or default) and its switch."""
    program = await get_program(session, principal, program_id)
    rows = {
        row.kind: row
        for row in await session.scalars(
            select(EmailTemplate).where(EmailTemplate.program_id == program.id)
        )
    }
    return [_template_out(kind, rows.get(kind)) for kind in EmailKind]


async def get_template(
    session: AsyncSession, principal: Principal, program_id: UUID, kind: EmailKind
) -> EmailTemplateOut:
    program = await get_program(session, principal, program_id)
    return _template_out(kind, await _own_template(session, program.id, kind))


async def set_template(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    kind: EmailKind,
    data: EmailTemplateSet,
) -> EmailTemplateOut:
    """Replace the program's templates of one email (422 `template_invalid` with the line)."""
    program = await get_program(session, principal, program_id)
    rendering.validate(kind, {"subject": data.subject, "text": data.text, "html": data.html})
    now = utcnow()
    await session.execute(
        insert_ignoring_conflicts(
            session,
            EmailTemplate.__table__,
            {
                "id": uuid4(),
                "created_at": now,
                "updated_at": now,
                "program_id": program.id,
                "kind": kind.value,
                "enabled": True,
            },
        )
    )
    row = await _own_template(session, program.id, kind, for_update=True)
    assert row is not None
    row.subject, row.text_body, row.html_body = data.subject, data.text, data.html
    row.enabled, row.updated_at = data.enabled, now
    await session.flush()
    return _template_out(kind, row)


async def reset_template(
    session: AsyncSession, principal: Principal, program_id: UUID, kind: EmailKind
) -> None:
    """Back to the default templates (and the email turned on)."""
    program = await get_program(session, principal, program_id)
    await session.execute(
        delete(EmailTemplate).where(
            EmailTemplate.program_id == program.id, EmailTemplate.kind == kind
        )
    )


async def preview(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    program_id: UUID,
    kind: EmailKind,
    data: EmailPreviewIn,
) -> EmailPreviewOut:
    """The email rendered with sample data: the given parts, else the program's own or default."""
    program = await get_program(session, principal, program_id)
    given = {"subject": data.subject, "text": data.text, "html": data.html}
    rendering.validate(kind, given)
    row = await _own_template(session, program.id, kind)
    saved = {
        "subject": row.subject if row else None,
        "text": row.text_body if row else None,
        "html": row.html_body if row else None,
    }
    parts = {part: given[part] or saved[part] for part in rendering.PARTS}
    context = rendering.sample_context(kind)
    context["program"] = {"name": program.name, "referee_offer": program.referee_offer}
    rendered = rendering.render(
        kind,
        context,
        parts,
        program_name=program.name,
        unsubscribe_url=context["unsubscribe_url"],
    )
    return EmailPreviewOut(
        event=kind, subject=rendered.subject, text=rendered.text, html=rendered.html
    )


async def list_messages(
    session: AsyncSession,
    principal: Principal,
    program_id: UUID,
    params: PageParams,
    status: MessageStatus | None = None,
    kind: EmailKind | None = None,
) -> tuple[list[EmailMessageOut], str | None]:
    """The program's outbox, oldest first; `status=unknown` lists what ops must look at."""
    program = await get_program(session, principal, program_id)
    query = select(EmailMessage).where(EmailMessage.program_id == program.id)
    if status is not None:
        query = query.where(EmailMessage.status == status)
    if kind is not None:
        query = query.where(EmailMessage.kind == kind)
    rows, next_cursor = await paginate(session, query, EmailMessage, params)
    return [
        EmailMessageOut(
            id=row.id,
            program_id=row.program_id,
            event=row.kind,
            referrer_id=row.referrer_id,
            recipient=row.recipient,
            to=row.to_address,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            sent_at=row.sent_at,
            smtp_status=row.smtp_status,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ], next_cursor


async def unsubscribe_target(session: AsyncSession, settings: Settings, token: str) -> Program:
    """The program a valid unsubscribe token is for (nothing changes: the page's GET)."""
    found = read_token(settings.email_secret.get_secret_value(), token)
    program = await session.get(Program, found[0]) if found else None
    if program is None:
        raise InvalidUnsubscribeToken("This unsubscribe link is not valid.")
    return program


async def unsubscribe(session: AsyncSession, settings: Settings, token: str) -> Program:
    """The address of the token gets no email of its program again (idempotent)."""
    program = await unsubscribe_target(session, settings, token)
    _, digest = read_token(settings.email_secret.get_secret_value(), token) or (None, "")
    await suppress(session, {(program.id, digest)}, "unsubscribed")
    return program


async def suppress(session: AsyncSession, targets: set[tuple[UUID, str]], reason: str) -> None:
    """Add (program, address hash) pairs to the suppression list and cancel what is queued."""
    now = utcnow()
    for program_id, digest in sorted(targets):
        await session.execute(
            insert_ignoring_conflicts(
                session,
                EmailSuppression.__table__,
                {
                    "id": uuid4(),
                    "created_at": now,
                    "program_id": program_id,
                    "address_hash": digest,
                    "reason": reason,
                },
            )
        )
        await session.execute(
            update(EmailMessage)
            .where(
                EmailMessage.program_id == program_id,
                EmailMessage.address_hash == digest,
                EmailMessage.status == MessageStatus.PENDING,
            )
            .values(status=MessageStatus.SUPPRESSED, error=reason, updated_at=now)
            .execution_options(synchronize_session=False)
        )


async def forget_recipient(
    session: AsyncSession, customer_id: str, programs: frozenset[UUID] | None
) -> None:
    """GDPR erasure of `customer_id` (in `programs`, None: all): their addresses are suppressed
    for good, queued emails cancelled, and the address and names dropped from every message.

    Call it before the person's rows are anonymised: it reads their addresses from them.
    """
    referrers = select(Referrer.program_id, Referrer.email, Referrer.id).where(
        Referrer.external_id == customer_id
    )
    referrals = select(Referral.program_id, Referral.email).where(
        Referral.customer_id == customer_id
    )
    if programs is not None:
        referrers = referrers.where(Referrer.program_id.in_(programs))
        referrals = referrals.where(Referral.program_id.in_(programs))
    referrer_rows = (await session.execute(referrers)).all()
    addresses = [(row[0], row[1]) for row in referrer_rows]
    addresses += [(row[0], row[1]) for row in (await session.execute(referrals)).all()]
    targets = {(program_id, address_hash(email)) for program_id, email in addresses if email}
    await suppress(session, targets, "erased")
    referrer_ids = [row[2] for row in referrer_rows]
    # Their emails: to them as a referrer, or to one of their addresses (as a referee). Emails
    # to their referees stay: those belong to the referees and name nobody else.
    theirs = [
        (EmailMessage.program_id == program_id) & (EmailMessage.address_hash == digest)
        for program_id, digest in targets
    ]
    if referrer_ids:
        theirs.append(
            (EmailMessage.recipient == "referrer") & EmailMessage.referrer_id.in_(referrer_ids)
        )
    if not theirs:
        return
    await session.execute(
        update(EmailMessage)
        .where(or_(*theirs))
        .values(to_address=None, context={}, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
