"""Reminders to referrers who shared nothing for N days: off by default, once per period."""

from datetime import timedelta
from typing import Any
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import update

from app.background import queue_referrer_reminders
from app.core.db import utcnow
from app.emails.reminders import queue_reminders
from app.referrers.models import Referrer
from tests.factories import BROWSER_UA, assert_problem, auth, make_key, make_program, make_referrer
from tests.mail_factories import dispatch, outbox, put_template
from tests.smtp_server import SmtpServer


async def _enrolled_days_ago(app: Any, referrer_id: str, days: float) -> None:
    async with app.state.engine.begin() as connection:
        await connection.execute(
            update(Referrer)
            .where(Referrer.id == UUID(referrer_id))
            .values(created_at=utcnow() - timedelta(days=days))
        )


async def _remind(app: Any, after_days: float = 0) -> int:
    async with app.state.sessionmaker() as session, session.begin():
        return await queue_reminders(session, utcnow() + timedelta(days=after_days))


async def _reminded(app: Any) -> list[tuple[str | None, int | None]]:
    return [
        (m.to_address, m.context.get("days"))
        for m in await outbox(app)
        if m.kind.value == "reminder"
    ]


async def test_the_setting_is_off_by_default_and_bounded(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    assert program["reminder_after_days"] is None
    path = f"/v1/programs/{program['id']}"
    for bad in (0, 366, "weekly"):
        response = await client.patch(path, json={"reminder_after_days": bad}, headers=auth(admin))
        assert_problem(response, 422, "validation_error")
    on = await client.patch(path, json={"reminder_after_days": 14}, headers=auth(admin))
    assert on.json()["reminder_after_days"] == 14
    off = await client.patch(path, json={"reminder_after_days": None}, headers=auth(admin))
    assert off.json()["reminder_after_days"] is None


async def test_reminders_once_per_period_to_those_without_clicks(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin = await make_key(mail_app)
    program = await make_program(mail_client, admin, reminder_after_days=7)
    quiet = await make_referrer(
        mail_client, admin, program["id"], "quiet", email="quiet@example.com", name="Quinn"
    )
    sharer = await make_referrer(mail_client, admin, program["id"], "sharer", email="s@example.com")
    newbie = await make_referrer(mail_client, admin, program["id"], "new", email="new@example.com")
    nomail = await make_referrer(mail_client, admin, program["id"], "nomail")
    for referrer in (quiet, sharer, nomail):
        await _enrolled_days_ago(mail_app, referrer["id"], 10)
    await _enrolled_days_ago(mail_app, newbie["id"], 3)
    followed = await mail_client.get(
        f"/r/{sharer['default_code']['code']}", headers={"User-Agent": BROWSER_UA}
    )
    assert followed.status_code == 302

    assert await _remind(mail_app) == 1
    assert await _reminded(mail_app) == [("quiet@example.com", 7)]
    assert await _remind(mail_app) == 0  # the same period: nothing more
    # Five days on, the newbie is 8 days in: reminded; the quiet one not (reminded 5 days ago).
    assert await _remind(mail_app, after_days=5) == 1
    assert await dispatch(mail_app) == 5  # three welcome emails and two reminders
    (reminder,) = [
        r
        for r in smtp_server.received
        if r.recipients == ["quiet@example.com"] and "waiting" in r.message["Subject"]
    ]
    assert reminder.message["Subject"] == "Your Spring referrals link is waiting for you"
    assert "in the last 7 days" in reminder.part("plain")
    assert f"/r/{quiet['default_code']['code']}" in reminder.part("plain")

    # A week on: the quiet one's next period, and the sharer's click is 7.5 days old; the
    # newbie is still in the period it was reminded in.
    assert await _remind(mail_app, after_days=7.5) == 2
    assert sorted(await _reminded(mail_app)) == [
        ("new@example.com", 7),
        ("quiet@example.com", 7),
        ("quiet@example.com", 7),
        ("s@example.com", 7),
    ]
    assert await _remind(mail_app, after_days=8) == 0


async def test_no_reminders_when_off_turned_off_or_unsubscribed(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin = await make_key(mail_app)
    off = await make_program(mail_client, admin, name="Off")
    quiet = await make_referrer(mail_client, admin, off["id"], "quiet", email="q@example.com")
    await _enrolled_days_ago(mail_app, quiet["id"], 400)
    assert await _remind(mail_app) == 0

    muted = await make_program(mail_client, admin, name="Muted", reminder_after_days=3)
    other = await make_referrer(mail_client, admin, muted["id"], "quiet", email="m@example.com")
    await _enrolled_days_ago(mail_app, other["id"], 5)
    await put_template(mail_client, admin, muted["id"], "reminder", enabled=False)
    assert await _remind(mail_app) == 0

    await put_template(mail_client, admin, muted["id"], "reminder", enabled=True)
    await dispatch(mail_app)
    unsubscribe = smtp_server.received[-1].message["List-Unsubscribe"].strip("<>")
    assert (await mail_client.post(unsubscribe.split("example.com", 1)[1])).status_code == 200
    # Suppressed, and the decision kept: not picked up again in this period.
    assert await _remind(mail_app) == 1
    assert [m.status for m in await outbox(mail_app) if m.kind.value == "reminder"] == [
        "suppressed"
    ]
    assert await _remind(mail_app) == 0


async def test_the_housekeeping_loop_queues_them_only_with_emails_on(
    client: AsyncClient, app: Any, mail_client: AsyncClient, mail_app: Any
) -> None:
    admin = await make_key(mail_app)
    program = await make_program(mail_client, admin, reminder_after_days=1)
    quiet = await make_referrer(mail_client, admin, program["id"], "quiet", email="q@example.com")
    await _enrolled_days_ago(mail_app, quiet["id"], 2)
    assert await queue_referrer_reminders(app.state.sessionmaker) == 0  # SMTP not configured
    assert await queue_referrer_reminders(mail_app.state.sessionmaker) == 1
