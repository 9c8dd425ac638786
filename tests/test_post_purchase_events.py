"""Post-purchase prompts, what goes out: the signed `referrer.enrolled` webhook with the share,
the enrolled email of an auto-enrolled buyer, and the fulfilled email showing what the provider
issued (the coupon or gift card code) — on a real receiver and a real SMTP server on loopback."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select

from app.fulfilment.dispatcher import Dispatcher as FulfilmentDispatcher
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.models import WebhookEvent
from tests.factories import auth, db_all, make_key, make_program, make_referrer
from tests.fakes.issuer import FakeIssuer
from tests.fakes.shopify import FakeShopify
from tests.fulfilment_helpers import (  # noqa: F401
    connect_issuer,
    connect_shopify,
    issuer_fixture,
    shopify_fixture,
)
from tests.fulfilment_helpers import reward as reward_of
from tests.mail_factories import dispatch, outbox
from tests.money_factories import add_rule, purchase, setup_program
from tests.settings import settings_for_tests
from tests.smtp_server import SmtpServer
from tests.webhook_receiver import Receiver, receiver_fixture  # noqa: F401


@pytest.fixture
async def webhooks(app: Any) -> AsyncIterator[Dispatcher]:
    worker = Dispatcher(app.state.sessionmaker, settings_for_tests(webhook_timeout_seconds=2))
    yield worker
    await worker.aclose()


@pytest.fixture
async def fulfilments(mail_app: Any, shopify: FakeShopify) -> AsyncIterator[FulfilmentDispatcher]:
    """The fulfilment dispatcher of the app with emails on, its providers the fakes."""
    settings = settings_for_tests(shopify_admin_base_url=shopify.url, fulfilment_timeout_seconds=1)
    worker = FulfilmentDispatcher(mail_app.state.sessionmaker, settings)
    yield worker
    await worker.aclose()


async def drain(worker: Dispatcher | FulfilmentDispatcher) -> None:
    for _ in range(10):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the outbox did not drain")


# --- referrer.enrolled ------------------------------------------------------------------------


async def test_referrer_enrolled_is_delivered_for_api_and_purchase_enrolments(
    client: AsyncClient, app: Any, receiver: Receiver, webhooks: Dispatcher
) -> None:
    admin = await make_key(app)
    prog = await make_program(client, admin, auto_enrol_buyers=True, referee_offer="10% off")
    created = await client.post(
        "/v1/webhook-endpoints",
        json={"url": receiver.url, "program_id": prog["id"], "event_types": ["referrer.enrolled"]},
        headers=auth(admin),
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]

    alice = await make_referrer(client, admin, prog["id"], "alice", email="alice@example.com")
    await make_referrer(client, admin, prog["id"], "alice", name="Alice")  # an update: no event
    bought = await purchase(client, admin, prog, "o1", "bob", "25.00", email="bob@example.com")
    await purchase(client, admin, prog, "o2", "bob", "25.00")  # enrolled already: no event
    await purchase(client, admin, prog, "o3", "alice", "25.00")  # a referrer already: no event

    await drain(webhooks)
    events = [request.verify(secret) for request in receiver.received]
    assert [event["type"] for event in events] == ["referrer.enrolled"] * 2
    # Delivery keeps order per object only: the two referrers' events may arrive either way.
    by_source = {event["data"]["source"]: event["data"] for event in events}
    by_api, by_purchase = by_source["api"], by_source["purchase"]

    assert by_api["id"] == alice["id"] and by_api["external_id"] == "alice"
    assert (by_api["source"], by_api["conversion_id"]) == ("api", None)
    assert by_api["default_code"]["code"] == alice["default_code"]["code"]
    assert by_api["share"]["code"] == alice["default_code"]["code"]
    assert by_api["share"]["offer"] == "10% off"

    assert by_purchase["external_id"] == "bob" and by_purchase["email"] == "bob@example.com"
    assert (by_purchase["source"], by_purchase["conversion_id"]) == ("purchase", bought["id"])
    assert by_purchase["share"] == bought["share"]
    assert set(by_purchase["share"]["qr"]) == {"plain", "packaging", "invoice", "receipt", "email"}
    assert by_purchase["share"]["qr"]["packaging"]["svg"].endswith(
        f"/v1/codes/{bought['share']['code']}/qr.svg?placement=packaging"
    )
    ids = {request.headers["webhook-id"] for request in receiver.received}
    assert len(ids) == 2


async def test_nothing_is_written_when_no_endpoint_listens(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    prog = await make_program(client, admin, auto_enrol_buyers=True)
    await client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["reward.created"]},
        headers=auth(admin),
    )
    await make_referrer(client, admin, prog["id"], "alice")
    await purchase(client, admin, prog, "o1", "bob", "25.00")
    assert await db_all(app, select(WebhookEvent)) == []


async def test_erasure_rewrites_the_enrolled_event_of_a_buyer(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    prog = await make_program(client, admin, auto_enrol_buyers=True)
    await client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["referrer.enrolled"]},
        headers=auth(admin),
    )
    await purchase(client, admin, prog, "o1", "frank_77", "25.00", email="frank@example.com")
    [before] = await db_all(app, select(WebhookEvent.payload))
    assert before["data"]["external_id"] == "frank_77"
    assert (await client.delete("/v1/customers/frank_77", headers=auth(admin))).status_code == 200
    [after] = await db_all(app, select(WebhookEvent.payload))
    assert "frank" not in str(after)
    assert after["data"]["external_id"].startswith("erased:") and after["data"]["email"] is None
    assert after["data"]["share"] == before["data"]["share"]  # a code and texts: nobody's data


# --- emails -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("mail_client")
async def test_an_auto_enrolled_buyer_gets_the_enrolled_email(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin = await make_key(mail_app)
    prog = await make_program(mail_client, admin, auto_enrol_buyers=True, name="Spring referrals")
    bought = await purchase(mail_client, admin, prog, "o1", "dana", "25.00", email="d@example.com")
    await purchase(mail_client, admin, prog, "o2", "dana", "25.00", email="d@example.com")
    await purchase(mail_client, admin, prog, "o3", "no-email", "25.00")  # enrolled, not emailed
    queued = await outbox(mail_app)
    assert [(m.kind, m.to_address) for m in queued] == [("enrolled", "d@example.com")]

    assert await dispatch(mail_app) == 1
    (received,) = smtp_server.received
    text = received.part("plain")
    assert received.recipients == ["d@example.com"]
    assert bought["share"]["code"] in text and bought["share"]["link"] in text
    assert received.message["List-Unsubscribe"].startswith("<")


@pytest.mark.usefixtures("mail_client")
async def test_the_fulfilled_email_shows_the_coupon_code_to_the_referrer(
    mail_client: AsyncClient,
    mail_app: Any,
    smtp_server: SmtpServer,
    fulfilments: FulfilmentDispatcher,
) -> None:
    admin, prog, alice = await setup_program(mail_client, mail_app, name="Spring referrals")
    await connect_shopify(mail_client, admin, prog["id"])
    rule = {"recipient": "referrer", "kind": "fixed", "amount": "10.00", "fulfilment": "coupon"}
    await add_rule(mail_client, admin, prog["id"], **rule, fulfilment_provider="shopify")
    code = alice["default_code"]["code"]
    bought = await purchase(mail_client, admin, prog, "o1", "bob", "80.00", code=code)
    [earned] = bought["rewards"]
    await drain(fulfilments)
    shown = await reward_of(mail_client, admin, earned["id"])
    coupon = shown["fulfilment"]["code"]
    assert shown["status"] == "paid" and coupon.startswith("REF")

    await drain_emails(mail_app)
    fulfilled = [m for m in await outbox(mail_app) if m.kind == "reward_fulfilled"]
    assert [(m.to_address, m.status) for m in fulfilled] == [("alice@example.com", "sent")]
    [received] = [r for r in smtp_server.received if coupon in r.message["Subject"]]
    assert received.recipients == ["alice@example.com"]
    assert received.message["Subject"] == f"Your $10.00 reward is ready: {coupon}"
    text, html = received.part("plain"), received.part("html")
    assert f"\n{coupon}\n" in text and "discount code" in text
    assert f"<strong>{coupon}</strong>" in html
    assert "Unsubscribe:" in text and received.message["List-Unsubscribe-Post"]
    # the fulfilled reward sends no reward_paid email besides (one email for one event)
    assert not [m for m in await outbox(mail_app) if m.kind == "reward_paid"]

    # a second round finds nothing: no email is sent twice
    await drain(fulfilments)
    sent = len(smtp_server.received)
    await drain_emails(mail_app)
    assert len(smtp_server.received) == sent


@pytest.mark.usefixtures("mail_client")
async def test_the_fulfilled_email_of_a_referee_gift_card_shows_its_code_and_reference(
    mail_client: AsyncClient,
    mail_app: Any,
    smtp_server: SmtpServer,
    fulfilments: FulfilmentDispatcher,
    issuer: FakeIssuer,
) -> None:
    admin, prog, alice = await setup_program(mail_client, mail_app)
    await connect_issuer(mail_client, admin, prog["id"], issuer)
    rule = {"recipient": "referee", "kind": "fixed", "amount": "15.00", "fulfilment": "gift_card"}
    await add_rule(mail_client, admin, prog["id"], **rule, fulfilment_provider="webhook")
    code = alice["default_code"]["code"]
    await purchase(
        mail_client, admin, prog, "o1", "bob", "80.00", code=code, email="bob@example.com"
    )
    await drain(fulfilments)
    await drain_emails(mail_app)
    to_bob = [r for r in smtp_server.received if r.recipients == ["bob@example.com"]]
    [received] = [r for r in to_bob if "is ready" in r.message["Subject"]]
    text = received.part("plain")
    assert "gift card" in text and "Gift card reference: gc_1" in text
    assert received.message["Subject"].startswith("Your $15.00 reward is ready: REF")
    gift_code = received.message["Subject"].rsplit(": ", 1)[1]
    assert f"\n{gift_code}\n" in text
    assert code not in text  # a referee's email never names the referrer's code


async def drain_emails(app: Any) -> None:
    later = datetime.now(UTC) + timedelta(seconds=1)
    for _ in range(20):
        if await dispatch(app, later) == 0:
            return
    raise AssertionError("the email outbox did not drain")


async def test_the_fulfilled_email_previews_and_takes_an_override(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    prog = await make_program(client, admin, name="Spring referrals")
    path = f"/v1/programs/{prog['id']}/email-templates/reward_fulfilled"
    preview = await client.post(f"{path}/preview", json={}, headers=auth(admin))
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["subject"] == "Your $10.00 reward is ready: REFK7QW2M9XHD4TP"
    assert "Your discount code:\n\nREFK7QW2M9XHD4TP\n" in body["text"]
    assert "<strong>REFK7QW2M9XHD4TP</strong>" in body["html"]
    own = {"text": "{{ fulfilment.method }}: {{ fulfilment.code }} ({{ fulfilment.reference }})"}
    saved = await client.put(path, json=own, headers=auth(admin))
    assert saved.status_code == 200, saved.text
    again = await client.post(f"{path}/preview", json={}, headers=auth(admin))
    assert again.json()["text"].startswith(
        "coupon: REFK7QW2M9XHD4TP (gid://shopify/DiscountCodeNode/1042)"
    )
    refused = await client.post(
        f"{path}/preview", json={"text": "{{ fulfilment.secret }}"}, headers=auth(admin)
    )
    assert refused.status_code == 422 and refused.json()["code"] == "template_invalid"
