"""Unsubscribed or erased: no email, ever (checked when queued and again when sent)."""

from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from httpx import AsyncClient
from sqlalchemy import func, select

from app.emails.models import EmailSuppression
from app.emails.tokens import address_hash, unsubscribe_token
from tests.factories import auth, make_program, make_referrer, redeem
from tests.mail_factories import dispatch, outbox, shop
from tests.money_factories import add_rule, purchase
from tests.smtp_server import SmtpServer


async def _suppressions(app: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(EmailSuppression)) or 0)


def _unsubscribe_path(received: Any) -> str:
    url = received.message["List-Unsubscribe"].split(",")[0].strip("<> ")
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_one_click_unsubscribe_stops_every_later_email(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin, program, alice = await shop(mail_client, mail_app)
    await dispatch(mail_app)
    (welcome,) = smtp_server.received
    path = _unsubscribe_path(welcome)

    # The page asks first: a GET (a mail scanner, a prefetch) changes nothing.
    page = await mail_client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "Spring referrals" in page.text and "method=post" in page.text
    assert await _suppressions(mail_app) == 0
    # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click to the URL, with no cookie.
    done = await mail_client.post(
        path,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200, done.text
    assert "You are unsubscribed" in done.text
    assert await _suppressions(mail_app) == 1
    assert (await mail_client.post(path)).status_code == 200  # again: still unsubscribed

    await add_rule(
        mail_client, admin, program["id"], recipient="referrer", kind="fixed", amount="5.00"
    )
    await redeem(mail_client, admin, alice["default_code"]["code"], "bob", email="bob@example.com")
    await purchase(mail_client, admin, program, "order-1", "bob", "30.00")
    later = [m for m in await outbox(mail_app) if m.kind.value != "enrolled"]
    assert [(m.kind.value, m.status, m.to_address, m.context) for m in later] == [
        ("referral_redeemed", "suppressed", None, {}),
        ("reward_earned", "suppressed", None, {}),
    ]
    assert await dispatch(mail_app) == 0
    assert len(smtp_server.received) == 1


async def test_unsubscribing_is_per_program(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin, _, _ = await shop(mail_client, mail_app)
    await dispatch(mail_app)
    await mail_client.post(_unsubscribe_path(smtp_server.received[0]))
    other = await make_program(mail_client, admin, name="Autumn referrals")
    await make_referrer(mail_client, admin, other["id"], "alice", email="ALICE@example.com")
    assert await dispatch(mail_app) == 1
    assert smtp_server.received[-1].message["Subject"] == "Your Autumn referrals referral link"


async def test_suppression_is_checked_again_when_sending(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    """An unsubscribe that committed while the email's own transaction was still open (so its
    cancelling UPDATE did not see the new row): the check at send time catches it."""
    await shop(mail_client, mail_app)
    (queued,) = await outbox(mail_app)
    async with mail_app.state.sessionmaker() as session:
        session.add(
            EmailSuppression(
                program_id=queued.program_id,
                address_hash=address_hash("Alice@Example.com "),
                reason="unsubscribed",
            )
        )
        await session.commit()
    assert (await outbox(mail_app))[0].status == "pending"
    assert await dispatch(mail_app) == 1
    (row,) = await outbox(mail_app)
    assert row.status == "suppressed"
    assert smtp_server.received == []


async def test_a_forged_or_broken_token_changes_nothing(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    await shop(mail_client, mail_app)
    (queued,) = await outbox(mail_app)
    forged = unsubscribe_token("another-secret", queued.program_id, queued.address_hash)
    for token in (forged, "u1.bm90LWEtdG9rZW4", "garbage", forged[:-2]):
        for method in ("GET", "POST"):
            response = await mail_client.request(method, "/unsubscribe", params={"token": token})
            assert response.status_code == 400, (method, token, response.text)
            assert "not valid" in response.text
    missing = await mail_client.post("/unsubscribe")
    assert missing.status_code == 422
    assert await dispatch(mail_app) == 1
    assert len(smtp_server.received) == 1


async def test_an_erased_person_gets_nothing_ever(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin, program, alice = await shop(mail_client, mail_app)
    await add_rule(
        mail_client,
        admin,
        program["id"],
        recipient="referee",
        kind="fixed",
        amount="5.00",
        hold_days=9,
    )
    await redeem(mail_client, admin, alice["default_code"]["code"], "bob", email="bob@example.com")
    await purchase(mail_client, admin, program, "order-1", "bob", "30.00")
    # Queued and not yet sent: alice's welcome and redemption emails, bob's reward email.
    erased = await mail_client.delete("/v1/customers/bob", headers=auth(admin))
    assert erased.status_code == 200, erased.text
    erased = await mail_client.delete("/v1/customers/alice", headers=auth(admin))
    assert erased.status_code == 200, erased.text
    rows = await outbox(mail_app)
    assert sorted(m.kind.value for m in rows) == ["enrolled", "referral_redeemed", "reward_earned"]
    assert all((m.status, m.to_address, m.context) == ("suppressed", None, {}) for m in rows)
    assert await dispatch(mail_app) == 0
    # The merchant adds the same people again: their addresses stay suppressed.
    again = await make_referrer(
        mail_client, admin, program["id"], "alice-2", email="alice@example.com", name="Alice"
    )
    (welcome,) = [m for m in await outbox(mail_app) if m.referrer_id == UUID(again["id"])]
    assert (welcome.status, welcome.to_address) == ("suppressed", None)
    assert await dispatch(mail_app) == 0
    assert smtp_server.received == []


async def test_erasure_scrubs_sent_emails_and_keeps_other_peoples(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin, program, _ = await shop(mail_client, mail_app)
    await make_referrer(mail_client, admin, program["id"], "carol", email="carol@example.com")
    await dispatch(mail_app)
    assert len(smtp_server.received) == 2
    assert (await mail_client.delete("/v1/customers/alice", headers=auth(admin))).status_code == 200
    by_address = {m.address_hash: m for m in await outbox(mail_app)}
    alice_row = by_address[address_hash("alice@example.com")]
    carol_row = by_address[address_hash("carol@example.com")]
    assert (alice_row.status, alice_row.to_address, alice_row.context) == ("sent", None, {})
    assert carol_row.to_address == "carol@example.com" and carol_row.context["code"]
    listed = await mail_client.get(
        f"/v1/programs/{program['id']}/email-messages", headers=auth(admin)
    )
    assert sorted(str(m["to"]) for m in listed.json()["data"]) == ["None", "carol@example.com"]


async def test_an_erasure_limited_to_another_program_suppresses_nothing_here(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin, _, _ = await shop(mail_client, mail_app)
    other = await make_program(mail_client, admin, name="Other")
    response = await mail_client.delete(
        "/v1/customers/alice", params={"program_id": other["id"]}, headers=auth(admin)
    )
    assert response.status_code == 200
    assert await dispatch(mail_app) == 1
    assert len(smtp_server.received) == 1
