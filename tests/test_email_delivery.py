"""Lifecycle emails on a real SMTP server on loopback: what is sent, to whom, and how often."""

import asyncio
import io
import os
import signal
import sys
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from httpx import AsyncClient
from PIL import Image
from sqlalchemy import select, text, update

from app.core.db import utcnow
from app.emails.dispatcher import EmailDispatcher
from app.emails.models import EmailMessage
from app.rewards.models import Reward
from tests.factories import auth, make_key, make_program, make_referrer, redeem
from tests.mail_factories import dispatch, outbox, shop
from tests.money_factories import add_rule, post_conversion, purchase
from tests.settings import DATABASE_URL, mail_settings_for_tests
from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.usefixtures("mail_client")


async def test_enrolled_email_headers_and_bodies(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin = await make_key(mail_app)
    program = await make_program(mail_client, admin, name="Spring <b>referrals</b>")
    referrer = await make_referrer(
        mail_client,
        admin,
        program["id"],
        "alice",
        email="alice@example.com",
        name="<script>alert(1)</script> Alice",
    )
    code = referrer["default_code"]["code"]
    (queued,) = await outbox(mail_app)
    assert (queued.kind, queued.status, queued.to_address) == (
        "enrolled",
        "pending",
        "alice@example.com",
    )
    assert smtp_server.received == []  # never sent inside the request

    assert await dispatch(mail_app) == 1
    (received,) = smtp_server.received
    message = received.message
    assert received.sender == "referrals@shop.example"
    assert received.recipients == ["alice@example.com"]
    assert message["From"] == "Spring Shop <referrals@shop.example>"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Your Spring <b>referrals</b> referral link"
    assert message["Message-ID"] == f"<{queued.id.hex}@shop.example>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = message["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://referrals.example.com/unsubscribe?token=u1.")
    assert unsubscribe.endswith(">") and "mailto:" not in unsubscribe
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]

    link = f"https://referrals.example.com/r/{code}"
    plain = received.part("plain")
    assert "Hi <script>alert(1)</script> Alice," in plain  # plain text is not markup
    assert link in plain and code in plain and unsubscribe[1:-1] in plain
    html = received.part("html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Alice" in html
    assert "Spring &lt;b&gt;referrals&lt;/b&gt;" in html
    assert f'<a href="{link}">' in html
    assert unsubscribe[1:-1].replace("&", "&amp;") in html

    # The QR code in the email is this service's image of the link, tagged as the email channel.
    qr_src = html.split('<img src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    parts = urlsplit(qr_src)
    assert parts.path == f"/v1/codes/{code}/qr.png" and parse_qs(parts.query)["placement"] == [
        "email"
    ]
    image = await mail_client.get(f"{parts.path}?{parts.query}")
    decoded = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(image.content)))]
    assert decoded == [f"{link}?utm_source=email&utm_medium=email"]

    (sent,) = await outbox(mail_app)
    assert (sent.status, sent.attempts, sent.smtp_status) == ("sent", 1, 250)
    assert await dispatch(mail_app) == 0
    assert len(smtp_server.received) == 1


async def test_a_welcome_only_for_a_new_referrer_with_an_address(
    mail_client: AsyncClient, mail_app: Any
) -> None:
    admin = await make_key(mail_app)
    program = await make_program(mail_client, admin)
    await make_referrer(mail_client, admin, program["id"], "no-mail")
    await make_referrer(mail_client, admin, program["id"], "alice", email="alice@example.com")
    await make_referrer(mail_client, admin, program["id"], "alice", email="alice@example.com")
    await make_referrer(mail_client, admin, program["id"], "no-mail", email="late@example.com")
    assert [m.to_address for m in await outbox(mail_app)] == ["alice@example.com"]


async def test_nothing_is_queued_while_smtp_is_not_configured(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    referrer = await make_referrer(client, admin, program["id"], "alice", email="alice@example.com")
    await add_rule(client, admin, program["id"], recipient="referrer", kind="fixed", amount="5.00")
    await redeem(client, admin, referrer["default_code"]["code"], "bob", email="bob@example.com")
    await purchase(client, admin, program, "order-1", "bob", "40.00")
    assert app.state.email_dispatcher is None
    assert await outbox(app) == []


async def test_every_event_emails_whom_it_concerns_once(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin, program, alice = await shop(mail_client, mail_app)
    code = alice["default_code"]["code"]
    await add_rule(
        mail_client, admin, program["id"], recipient="referrer", kind="fixed", amount="10.00"
    )
    await add_rule(
        mail_client,
        admin,
        program["id"],
        recipient="referee",
        kind="fixed",
        amount="5.00",
        hold_days=14,
    )
    redeemed = await redeem(mail_client, admin, code, "bob", email="bob@example.com")
    assert redeemed.status_code == 201, redeemed.text
    conversion = await purchase(mail_client, admin, program, "order-1", "bob", "40.00")
    # The same purchase posted again (a retry) is the same event: no new email.
    replay = await post_conversion(
        mail_client,
        admin,
        program_id=program["id"],
        event_id="order-1",
        customer_id="bob",
        amount="40.00",
        currency="USD",
    )
    assert replay.status_code == 200, replay.text
    by_recipient = {r["recipient"]: r["id"] for r in conversion["rewards"]}
    paid = await mail_client.post(
        f"/v1/rewards/{by_recipient['referrer']}/mark-paid",
        json={"payout_reference": "PAY-7"},
        headers=auth(admin),
    )
    assert paid.status_code == 200, paid.text
    approved = await mail_client.post(
        f"/v1/rewards/{by_recipient['referee']}/approve", headers=auth(admin)
    )
    assert approved.status_code == 200, approved.text

    # (Sorted: the emails of one transaction may share a timestamp.)
    sent = sorted((m.kind.value, m.recipient, m.to_address) for m in await outbox(mail_app))
    assert sent == sorted(
        [
            ("enrolled", "referrer", "alice@example.com"),
            ("referral_redeemed", "referrer", "alice@example.com"),
            # The referrer's reward had no hold: created approved, one email says so.
            ("reward_earned", "referrer", "alice@example.com"),
            ("reward_earned", "referee", "bob@example.com"),
            ("reward_paid", "referrer", "alice@example.com"),
            ("reward_approved", "referee", "bob@example.com"),
        ]
    )
    assert await dispatch(mail_app) == 6
    subjects = sorted((r.recipients[0], r.message["Subject"]) for r in smtp_server.received)
    assert subjects == sorted(
        [
            ("alice@example.com", "Your Spring referrals referral link"),
            ("alice@example.com", "A friend used your Spring referrals code"),
            ("alice@example.com", "You earned $10.00 with Spring referrals"),
            ("bob@example.com", "You earned $5.00 with Spring referrals"),
            ("alice@example.com", "Your $10.00 reward has been paid"),
            ("bob@example.com", "Your $5.00 reward is confirmed"),
        ]
    )
    mails = {(r.recipients[0], r.message["Subject"].split()[1]): r for r in smtp_server.received}
    redeemed_mail = mails[("alice@example.com", "friend")]
    alice_earned = mails[("alice@example.com", "earned")]
    bob_earned = mails[("bob@example.com", "earned")]
    paid_mail = mails[("alice@example.com", "$10.00")]
    # The referrer learns nothing about who redeemed; the referee nothing about the referrer.
    assert "bob" not in redeemed_mail.raw.decode().lower()
    assert "It is confirmed." in alice_earned.part("plain")
    assert "alice" not in bob_earned.raw.decode().lower() and code not in bob_earned.part("plain")
    assert "It will be confirmed on" in bob_earned.part("plain")
    assert "Reference: PAY-7." in paid_mail.part("plain")
    # Message-IDs are per message, never reused across emails.
    assert len({r.message["Message-ID"] for r in smtp_server.received}) == 6


async def test_the_approval_sweep_emails_approved_rewards(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    from app.background import approve_due_rewards

    admin, program, alice = await shop(mail_client, mail_app)
    await add_rule(
        mail_client,
        admin,
        program["id"],
        recipient="referrer",
        kind="fixed",
        amount="3.00",
        hold_days=1,
    )
    await purchase(
        mail_client, admin, program, "order-1", "bob", "40.00", code=alice["default_code"]["code"]
    )
    async with mail_app.state.engine.begin() as connection:
        await connection.execute(update(Reward).values(hold_until=utcnow() - timedelta(minutes=1)))
    assert await approve_due_rewards(mail_app.state.sessionmaker) == 1
    kinds = [m.kind.value for m in await outbox(mail_app)]
    assert kinds == ["enrolled", "reward_earned", "reward_approved"]


@pytest.mark.parametrize(
    ("where", "reply"),
    [
        ("rcpt", "450 4.2.1 mailbox busy"),
        ("data", "451 4.3.0 try again later"),
        ("data", "554 5.7.1 rejected by policy"),
    ],
)
async def test_refusals_are_retried_with_backoff(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer, where: str, reply: str
) -> None:
    await shop(mail_client, mail_app)
    replies = (
        smtp_server.handler.rcpt_replies if where == "rcpt" else smtp_server.handler.data_replies
    )
    replies.extend([reply, reply])
    start = utcnow()
    assert await dispatch(mail_app, start) == 1
    (row,) = await outbox(mail_app)
    assert (row.status, row.attempts, row.smtp_status) == ("pending", 1, int(reply[:3]))
    assert row.error is not None and reply[:3] in row.error
    # Backoff: 60 s ± 25% after the first attempt, then about twice that.
    assert timedelta(seconds=44) <= row.next_attempt_at - start <= timedelta(seconds=76)
    assert await dispatch(mail_app, start + timedelta(seconds=30)) == 0
    assert await dispatch(mail_app, start + timedelta(minutes=2)) == 1
    (row,) = await outbox(mail_app)
    assert (row.status, row.attempts) == ("pending", 2)
    assert timedelta(seconds=89) <= row.next_attempt_at - (start + timedelta(minutes=2))
    assert smtp_server.received == []
    assert await dispatch(mail_app, start + timedelta(minutes=10)) == 1
    (row,) = await outbox(mail_app)
    assert (row.status, row.attempts, row.error) == ("sent", 3, None)
    assert len(smtp_server.received) == 1


async def test_a_refused_mailbox_fails_at_once(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    await shop(mail_client, mail_app)
    smtp_server.handler.rcpt_replies.append("550 5.1.1 no such user")
    assert await dispatch(mail_app) == 1
    (row,) = await outbox(mail_app)
    assert (row.status, row.smtp_status) == ("failed", 550)
    assert await dispatch(mail_app, utcnow() + timedelta(hours=5)) == 0
    assert smtp_server.received == []


async def test_after_the_retry_window_a_message_fails(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    await shop(mail_client, mail_app)
    smtp_server.handler.data_replies.extend(["421 4.7.0 closing"] * 50)
    now = utcnow()
    while (row := (await outbox(mail_app))[0]).status == "pending":
        now = max(now, row.next_attempt_at)
        assert await dispatch(mail_app, now) == 1
    assert row.status == "failed"
    assert row.attempts > 3
    assert row.next_attempt_at - row.created_at <= timedelta(hours=24)
    assert smtp_server.received == []


async def test_an_unreachable_server_costs_no_attempt(
    mail_client: AsyncClient, mail_app: Any
) -> None:
    await shop(mail_client, mail_app)
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    dispatcher = EmailDispatcher(mail_app.state.sessionmaker, mail_settings_for_tests(port))
    assert await dispatcher.run_once() == 0
    (row,) = await outbox(mail_app)
    assert (row.status, row.attempts) == ("pending", 0)


async def test_credentials_from_the_smtp_url(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    await shop(mail_client, mail_app)
    settings = mail_settings_for_tests(
        smtp_server.port, smtp_url=f"smtp://mailer:p%40ss%20word@127.0.0.1:{smtp_server.port}"
    )
    assert await EmailDispatcher(mail_app.state.sessionmaker, settings).run_once() == 1
    assert smtp_server.handler.logins == [("mailer", "p@ss word")]
    assert len(smtp_server.received) == 1


# --- at most once: a crash between the server's acceptance and the commit ---------------------


async def _start_round_process(smtp_server: SmtpServer) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.email_dispatch_round",
        DATABASE_URL,
        str(smtp_server.port),
        stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


async def _kill(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    await process.wait()
    assert process.returncode == -signal.SIGKILL


async def _after_the_crash(mail_app: Any, smtp_server: SmtpServer) -> None:
    """The row is left `sending`; no later round sends it again, and it ends `unknown`."""
    (row,) = await outbox(mail_app)
    assert (row.status, row.attempts) == ("sending", 1)
    assert await dispatch(mail_app) == 0
    lease = mail_app.state.email_dispatcher.lease
    assert await dispatch(mail_app, utcnow() + lease + timedelta(seconds=1)) == 0
    (row,) = await outbox(mail_app)
    assert row.status == "unknown" and "not sent again" in (row.error or "")
    assert await dispatch(mail_app, utcnow() + timedelta(days=2)) == 0
    assert len(smtp_server.received) == 1


async def test_killed_while_the_server_accepts_is_not_sent_twice(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    """The dispatcher process is SIGKILLed after the whole message reached the server, before
    it heard the 250: the server may have delivered it, so it is never sent again."""
    admin, program, _ = await shop(mail_client, mail_app)
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    smtp_server.handler.while_accepting = hold
    process = await _start_round_process(smtp_server)
    await asyncio.wait_for(smtp_server.handler.arrived.wait(), 30)
    await _kill(process)
    release.set()
    smtp_server.handler.while_accepting = None
    await _after_the_crash(mail_app, smtp_server)
    listed = await mail_client.get(
        f"/v1/programs/{program['id']}/email-messages",
        params={"status": "unknown"},
        headers=auth(admin),
    )
    assert listed.status_code == 200, listed.text
    assert [m["event"] for m in listed.json()["data"]] == ["enrolled"]


@pytest.mark.postgres
async def test_killed_after_the_250_before_the_commit_is_not_sent_twice(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    """The server says 250; the dispatcher's commit then waits on a row lock the test holds
    (a real database stall), and the process is SIGKILLed before it can record the send."""
    await shop(mail_client, mail_app)
    engine = mail_app.state.engine
    locked = asyncio.Event()
    async with engine.connect() as blocker, engine.connect() as observer:
        transaction = await blocker.begin()

        async def lock_the_row() -> None:
            (row,) = await outbox(mail_app)
            assert row.status == "sending"  # committed before the first byte went out
            await blocker.execute(
                select(EmailMessage.id).where(EmailMessage.id == row.id).with_for_update()
            )
            locked.set()

        smtp_server.handler.while_accepting = lock_the_row
        process = await _start_round_process(smtp_server)
        await asyncio.wait_for(locked.wait(), 30)
        # Wait until the process's recording is queued behind our lock, then kill it.
        for _ in range(200):
            waiting = await observer.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%FROM email_messages%FOR UPDATE%' "
                    "AND datname = current_database()"
                )
            )
            # pg_stat_activity is a snapshot per transaction: end it to read afresh.
            await observer.rollback()
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting == 1
        await _kill(process)
        await transaction.rollback()
    smtp_server.handler.while_accepting = None
    await _after_the_crash(mail_app, smtp_server)
