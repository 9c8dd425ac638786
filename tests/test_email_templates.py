"""A program's own email templates: saved, validated (with the line), previewed, reset."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.factories import assert_problem, auth, make_key, make_program, make_referrer
from tests.mail_factories import dispatch, outbox, put_template
from tests.smtp_server import SmtpServer

EVENTS = [
    "enrolled",
    "referral_redeemed",
    "reward_earned",
    "reward_approved",
    "reward_paid",
    "reward_fulfilled",
    "reminder",
]


async def test_every_event_lists_its_default_templates(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    response = await client.get(
        f"/v1/programs/{program['id']}/email-templates", headers=auth(admin)
    )
    assert response.status_code == 200, response.text
    templates = response.json()
    assert [t["event"] for t in templates] == EVENTS
    for template in templates:
        assert template["enabled"] is True and template["overridden"] == []
        assert template["updated_at"] is None
        assert (
            "{{" in template["subject"] and "{{" in template["text"] and "<p>" in template["html"]
        )


async def test_an_override_is_saved_shown_and_reset(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    path = f"/v1/programs/{program['id']}/email-templates/enrolled"
    saved = await put_template(
        client, admin, program["id"], "enrolled", subject="Welcome, {{ recipient.name }}!"
    )
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["subject"] == "Welcome, {{ recipient.name }}!"
    assert body["overridden"] == ["subject"] and body["updated_at"] is not None
    assert (await client.get(path, headers=auth(admin))).json() == body
    replaced = await put_template(
        client, admin, program["id"], "enrolled", html="<p>{{ link }}</p>"
    )
    assert replaced.json()["overridden"] == ["html"]  # a PUT replaces the whole override
    assert replaced.json()["subject"].startswith("Your {{ program.name }}")
    deleted = await client.delete(path, headers=auth(admin))
    assert deleted.status_code == 204
    again = (await client.get(path, headers=auth(admin))).json()
    assert again["overridden"] == [] and again["updated_at"] is None
    assert (await client.delete(path, headers=auth(admin))).status_code == 204


@pytest.mark.parametrize(
    ("part", "source", "line", "says"),
    [
        ("html", "<p>Hi</p>\n<p>{{ recipient.name }</p>", 2, "unexpected '}'"),
        ("text", "Hi\n\n{% for c in code %}{{ c }}{% endfor %}", 3, "for loops"),
        ("text", "{{ nickname }}", 1, "'nickname' is undefined"),
        ("subject", "{{ reward.amount }}", 1, "'reward' is undefined"),
        ("html", "{{ program.__class__ }}", 1, "__class__"),
        ("html", "{{ code.upper() }}", 1, "function calls"),
        ("text", "{{ code|attr('upper') }}", 1, "the filter 'attr'"),
        ("text", "{{ code * 1000000 }}", 1, "*"),
        ("text", "{% set x = code ~ code %}{{ x }}", 1, "set"),
        ("text", "{% include 'other' %}", 1, "include"),
    ],
)
async def test_invalid_templates_are_refused_with_the_line(
    client: AsyncClient, app: Any, part: str, source: str, line: int, says: str
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    response = await put_template(client, admin, program["id"], "enrolled", **{part: source})
    problem = assert_problem(response, 422, "template_invalid")
    (error,) = problem["errors"]
    assert error["loc"] == ["body", part]
    assert error["line"] == line
    assert says in error["msg"], error
    assert f"line {line}" in problem["detail"]
    listed = await client.get(
        f"/v1/programs/{program['id']}/email-templates/enrolled", headers=auth(admin)
    )
    assert listed.json()["overridden"] == []  # nothing stored


async def test_templates_and_preview_validate_the_body(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    path = f"/v1/programs/{program['id']}/email-templates"
    for body in ({"subject": ""}, {"html": "x" * 20_001}, {"colour": "red"}, {"subject": "a\x00b"}):
        assert_problem(
            await client.put(f"{path}/enrolled", json=body, headers=auth(admin)),
            422,
            "validation_error",
        )
    assert_problem(
        await client.put(f"{path}/newsletter", json={}, headers=auth(admin)),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post(
            f"{path}/reminder/preview", json={"text": "{{ days"}, headers=auth(admin)
        ),
        422,
        "template_invalid",
    )
    unknown = await client.get(
        "/v1/programs/00000000-0000-0000-0000-000000000000/email-templates", headers=auth(admin)
    )
    assert_problem(unknown, 404, "program_not_found")


async def test_preview_renders_sample_data_with_the_program_and_escapes(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin, name="Tom & Jerry's")
    await put_template(
        client, admin, program["id"], "reward_paid", subject="Paid: {{ reward.amount }}"
    )
    path = f"/v1/programs/{program['id']}/email-templates/reward_paid/preview"
    saved = await client.post(path, json={}, headers=auth(admin))
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["event"] == "reward_paid"
    assert body["subject"] == "Paid: $10.00"
    assert "Tom & Jerry's referral program has been paid. Reference: PAY-1042." in body["text"]
    assert "Unsubscribe: https://" in body["text"]
    assert "Tom &amp; Jerry&#39;s" in body["html"] and "Unsubscribe</a>" in body["html"]
    trial = await client.post(
        path,
        json={"html": "<p>{{ recipient.name }} & {{ '<b>' }}</p>"},
        headers=auth(admin),
    )
    assert "<p>Alice & &lt;b&gt;</p>" in trial.json()["html"]
    assert trial.json()["subject"] == "Paid: $10.00"  # the saved part where none is given
    # A preview saves nothing.
    template = await client.get(
        f"/v1/programs/{program['id']}/email-templates/reward_paid", headers=auth(admin)
    )
    assert template.json()["overridden"] == ["subject"]


async def test_sent_emails_use_the_override_and_keep_the_footer(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin = await make_key(mail_app)
    program = await make_program(mail_client, admin)
    saved = await put_template(
        mail_client,
        admin,
        program["id"],
        "enrolled",
        subject="{{ recipient.name|upper }}, share {{ code }}",
        text="Your link: {{ link }}",
        html="<h1>{{ recipient.name }}</h1>",
    )
    assert saved.status_code == 200, saved.text
    referrer = await make_referrer(
        mail_client, admin, program["id"], "alice", email="alice@example.com", name="<Alice>"
    )
    await dispatch(mail_app)
    (received,) = smtp_server.received
    code = referrer["default_code"]["code"]
    assert received.message["Subject"] == f"<ALICE>, share {code}"
    plain = received.part("plain")
    assert plain.startswith(f"Your link: https://referrals.example.com/r/{code}\n")
    assert "Unsubscribe: https://referrals.example.com/unsubscribe?token=" in plain
    html = received.part("html")
    assert "<h1>&lt;Alice&gt;</h1>" in html and ">Unsubscribe</a>" in html


async def test_a_program_can_turn_an_email_off(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin = await make_key(mail_app)
    program = await make_program(mail_client, admin)
    off = await put_template(mail_client, admin, program["id"], "enrolled", enabled=False)
    assert off.json()["enabled"] is False
    await make_referrer(mail_client, admin, program["id"], "alice", email="alice@example.com")
    assert await outbox(mail_app) == []
    # Queued before the switch: suppressed when its turn comes.
    on = await mail_client.delete(
        f"/v1/programs/{program['id']}/email-templates/enrolled", headers=auth(admin)
    )
    assert on.status_code == 204
    await make_referrer(mail_client, admin, program["id"], "bob", email="bob@example.com")
    await put_template(mail_client, admin, program["id"], "enrolled", enabled=False)
    await dispatch(mail_app)
    (row,) = await outbox(mail_app)
    assert (row.to_address, row.status) == (None, "suppressed")
    assert smtp_server.received == []


async def test_a_runtime_failure_of_an_override_sends_the_default(
    mail_client: AsyncClient, mail_app: Any, smtp_server: SmtpServer
) -> None:
    admin = await make_key(mail_app)
    program = await make_program(mail_client, admin)
    # Fine with the sample's name; a referrer without a name makes `first` fail at send time.
    saved = await put_template(
        mail_client, admin, program["id"], "enrolled", text="Dear {{ recipient.name|first }}"
    )
    assert saved.status_code == 200, saved.text
    await make_referrer(mail_client, admin, program["id"], "anon", email="anon@example.com")
    assert await dispatch(mail_app) == 1
    (received,) = smtp_server.received
    assert received.part("plain").startswith("Hi,\n\nYou are in the Spring referrals")
