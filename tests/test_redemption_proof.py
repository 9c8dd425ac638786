"""A program can make widget redemptions prove the customer: a click on the code, or a token.

A publishable key is public. Without proof, anyone holding it can redeem their own code for
any customer id (and learn from `already_referred` who is a customer). With
`redemption_proof`, a widget's redemption needs the click_id of a click on the same code (one
customer per click) or a customer token signed by the merchant's backend; secret keys are
trusted as before. The README's backend samples (Python and Node) are run here as written.
"""

import asyncio
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from app.programs.tokens import sign
from app.tracking.models import Referral
from tests.factories import (
    assert_problem,
    auth,
    code_row,
    make_key,
    make_program,
    make_referrer,
    record_click,
)

README = Path(__file__).resolve().parent.parent / "README.md"


async def protected_program(
    client: AsyncClient, app: Any, proof: str = "click_or_token"
) -> dict[str, Any]:
    admin = await make_key(app)
    program = await make_program(client, admin, redemption_proof=proof)
    assert program["redemption_proof"] == proof
    widget = await make_key(app, "publishable", [UUID(program["id"])])
    alice = await make_referrer(client, admin, program["id"], "alice")
    bob = await make_referrer(client, admin, program["id"], "bob")
    return {
        "admin": admin,
        "widget": widget,
        "program": program,
        "code": alice["default_code"]["code"],
        "other_code": bob["default_code"]["code"],
    }


async def redeem(client: AsyncClient, key: str, code: str, customer: str, **extra: Any) -> Response:
    body = {"code": code, "customer_id": customer} | extra
    return await client.post("/v1/redemptions", json=body, headers=auth(key))


async def new_secret(client: AsyncClient, key: str, program_id: str) -> dict[str, Any]:
    response = await client.post(
        f"/v1/programs/{program_id}/customer-token-secrets", headers=auth(key)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def referrals(app: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Referral)) or 0)


def token_for(secret: str, program_id: str, customer: str, ttl: int = 3600) -> str:
    return sign(secret, UUID(program_id), customer, int(time.time()) + ttl)


# --- off by default -------------------------------------------------------------------------------


async def test_without_the_setting_a_widget_redeems_as_before(
    client: AsyncClient, app: Any
) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    assert program["redemption_proof"] == "none"
    widget = await make_key(app, "publishable", [UUID(program["id"])])
    code = (await make_referrer(client, admin, program["id"]))["default_code"]["code"]
    assert (await redeem(client, widget, code, "cust_1000")).status_code == 201


# --- click_or_token ---------------------------------------------------------------------------


async def test_a_widget_without_proof_is_refused_and_learns_nothing(
    client: AsyncClient, app: Any
) -> None:
    w = await protected_program(client, app)
    # the merchant's backend referred cust_1 itself (a secret key is trusted)
    assert (await redeem(client, w["admin"], w["other_code"], "cust_1")).status_code == 201
    for customer in ("cust_1", "cust_1000"):
        refused = await redeem(client, w["widget"], w["code"], customer)
        body = assert_problem(refused, 422, "redemption_proof_required")
        assert "click_id" in body["detail"] and "customer_token" in body["detail"]
    assert await referrals(app) == 1
    assert (await code_row(app, w["code"])).redemption_count == 0


async def test_a_click_on_the_code_proves_one_customer(client: AsyncClient, app: Any) -> None:
    w = await protected_program(client, app)
    click = await record_click(client, w["widget"], w["code"])
    assert click.status_code == 201, click.text
    click_id = click.json()["click_id"]
    redeemed = await redeem(client, w["widget"], w["code"], "cust_new", click_id=click_id)
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["click_id"] == click_id
    # the same click cannot vouch for anyone else
    again = await redeem(client, w["widget"], w["code"], "cust_other", click_id=click_id)
    assert_problem(again, 409, "click_already_used")
    assert await referrals(app) == 1


async def test_a_click_on_another_code_is_no_proof(client: AsyncClient, app: Any) -> None:
    w = await protected_program(client, app)
    click = (await record_click(client, w["widget"], w["other_code"])).json()
    refused = await redeem(client, w["widget"], w["code"], "cust_new", click_id=click["click_id"])
    assert_problem(refused, 422, "click_code_mismatch")
    assert await referrals(app) == 0


@pytest.mark.postgres
async def test_one_click_wins_one_customer_under_concurrency(client: AsyncClient, app: Any) -> None:
    w = await protected_program(client, app)
    click_id = (await record_click(client, w["widget"], w["code"])).json()["click_id"]
    answers = await asyncio.gather(
        *(redeem(client, w["widget"], w["code"], f"cust_{n}", click_id=click_id) for n in range(10))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 9, [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"click_already_used"}
    assert await referrals(app) == 1


# --- customer tokens ----------------------------------------------------------------------------


async def test_a_customer_token_from_the_backend_proves_the_customer(
    client: AsyncClient, app: Any
) -> None:
    w = await protected_program(client, app)
    program_id = w["program"]["id"]
    created = await new_secret(client, w["admin"], program_id)
    secret = created["secret"]
    assert re.fullmatch(r"rcs_[A-Za-z0-9_-]{43}", secret)
    assert created["prefix"] == secret[:8]
    listed = await client.get(
        f"/v1/programs/{program_id}/customer-token-secrets", headers=auth(w["admin"])
    )
    assert listed.status_code == 200
    assert [row["prefix"] for row in listed.json()] == [created["prefix"]]
    assert secret not in listed.text and "secret" not in listed.json()[0]

    token = token_for(secret, program_id, "cust_42")
    assert token.startswith("rct1.")
    redeemed = await redeem(client, w["widget"], w["code"], "cust_42", customer_token=token)
    assert redeemed.status_code == 201, redeemed.text


async def test_tokens_that_do_not_vouch_are_refused(client: AsyncClient, app: Any) -> None:
    w = await protected_program(client, app)
    program_id = w["program"]["id"]
    secret = (await new_secret(client, w["admin"], program_id))["secret"]
    other_program = await make_program(client, w["admin"], name="Other")
    now = int(time.time())
    good = sign(secret, UUID(program_id), "cust_1", now + 600)
    cases = {
        "another customer": sign(secret, UUID(program_id), "cust_2", now + 600),
        "another program": sign(secret, UUID(other_program["id"]), "cust_1", now + 600),
        "another secret": sign("rcs_" + "x" * 43, UUID(program_id), "cust_1", now + 600),
        "a changed expiry": good.replace(f".{now + 600}.", f".{now + 6000}."),
        "a changed signature": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "another version": "rct2" + good[4:],
        "padding": good + "=",
        "no signature": f"rct1.{now + 600}.",
        "too far ahead": sign(secret, UUID(program_id), "cust_1", now + 8 * 86400),
    }
    for case, token in cases.items():
        refused = await redeem(client, w["widget"], w["code"], "cust_1", customer_token=token)
        answer = (refused.status_code, refused.json().get("code"))
        assert answer == (422, "customer_token_invalid"), (case, refused.text)
    expired = sign(secret, UUID(program_id), "cust_1", now - 1)
    refused = await redeem(client, w["widget"], w["code"], "cust_1", customer_token=expired)
    assert_problem(refused, 422, "customer_token_expired")
    assert await referrals(app) == 0
    assert (await redeem(client, w["widget"], w["code"], "cust_1", customer_token=good)).is_success


async def test_secrets_rotate_with_two_active_at_once(client: AsyncClient, app: Any) -> None:
    w = await protected_program(client, app)
    program_id, admin = w["program"]["id"], w["admin"]
    old = await new_secret(client, admin, program_id)
    new = await new_secret(client, admin, program_id)
    third = await client.post(
        f"/v1/programs/{program_id}/customer-token-secrets", headers=auth(admin)
    )
    assert_problem(third, 409, "too_many_token_secrets")
    for n, secret in enumerate((old["secret"], new["secret"])):
        token = token_for(secret, program_id, f"cust_{n}")
        ok = await redeem(client, w["widget"], w["code"], f"cust_{n}", customer_token=token)
        assert ok.status_code == 201, ok.text
    url = f"/v1/programs/{program_id}/customer-token-secrets/{old['id']}"
    assert (await client.delete(url, headers=auth(admin))).status_code == 204
    assert_problem(await client.delete(url, headers=auth(admin)), 404, "token_secret_not_found")
    stale = token_for(old["secret"], program_id, "cust_9")
    refused = await redeem(client, w["widget"], w["code"], "cust_9", customer_token=stale)
    assert_problem(refused, 422, "customer_token_invalid")
    fresh = token_for(new["secret"], program_id, "cust_9")
    assert (await redeem(client, w["widget"], w["code"], "cust_9", customer_token=fresh)).is_success


async def test_a_program_that_wants_a_token_takes_no_click_alone(
    client: AsyncClient, app: Any
) -> None:
    w = await protected_program(client, app, proof="token")
    click_id = (await record_click(client, w["widget"], w["code"])).json()["click_id"]
    refused = await redeem(client, w["widget"], w["code"], "cust_1", click_id=click_id)
    body = assert_problem(refused, 422, "redemption_proof_required")
    assert "customer_token" in body["detail"]
    secret = (await new_secret(client, w["admin"], w["program"]["id"]))["secret"]
    token = token_for(secret, w["program"]["id"], "cust_1")
    ok = await redeem(
        client, w["widget"], w["code"], "cust_1", click_id=click_id, customer_token=token
    )
    assert ok.status_code == 201, ok.text


async def test_a_secret_key_is_trusted_but_a_token_it_gives_is_checked(
    client: AsyncClient, app: Any
) -> None:
    w = await protected_program(client, app, proof="token")
    assert (await redeem(client, w["admin"], w["code"], "cust_1")).status_code == 201
    refused = await redeem(client, w["admin"], w["code"], "cust_2", customer_token="rct1.1.x")
    assert_problem(refused, 422, "customer_token_invalid")


async def test_the_setting_is_changed_like_any_program_field(client: AsyncClient, app: Any) -> None:
    w = await protected_program(client, app, proof="none")
    url = f"/v1/programs/{w['program']['id']}"
    patched = await client.patch(url, json={"redemption_proof": "token"}, headers=auth(w["admin"]))
    assert patched.status_code == 200 and patched.json()["redemption_proof"] == "token"
    assert_problem(
        await redeem(client, w["widget"], w["code"], "c"), 422, "redemption_proof_required"
    )
    for value in (None, "always", ""):
        bad = await client.patch(url, json={"redemption_proof": value}, headers=auth(w["admin"]))
        assert bad.status_code == 422, bad.text
    # a widget key may not manage token secrets
    forbidden = await client.post(f"{url}/customer-token-secrets", headers=auth(w["widget"]))
    assert_problem(forbidden, 403, "forbidden")


# --- the README's recipe, as written --------------------------------------------------------------


def readme_block(language: str, first_line: str) -> str:
    text = README.read_text()
    for block in re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"README has no {language} block starting {first_line!r}")


async def test_the_readme_python_sample_makes_tokens_the_service_takes(
    client: AsyncClient, app: Any
) -> None:
    w = await protected_program(client, app, proof="token")
    secret = (await new_secret(client, w["admin"], w["program"]["id"]))["secret"]
    namespace: dict[str, Any] = {}
    exec(readme_block("python", "# customer_token.py"), namespace)
    token = namespace["customer_token"](secret, w["program"]["id"], "cust_py")
    ok = await redeem(client, w["widget"], w["code"], "cust_py", customer_token=token)
    assert ok.status_code == 201, ok.text


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
async def test_the_readme_node_sample_makes_tokens_the_service_takes(
    client: AsyncClient, app: Any
) -> None:
    w = await protected_program(client, app, proof="token")
    secret = (await new_secret(client, w["admin"], w["program"]["id"]))["secret"]
    script = readme_block("js", "// customerToken.js") + (
        "\nprocess.stdout.write(customerToken("
        "process.env.SECRET, process.env.PROGRAM_ID, process.env.CUSTOMER_ID));\n"
    )
    environment = os.environ | {
        "SECRET": secret,
        "PROGRAM_ID": w["program"]["id"],
        "CUSTOMER_ID": "cust_node",
    }
    node = await asyncio.create_subprocess_exec(
        "node", "-e", script, env=environment, stdout=asyncio.subprocess.PIPE
    )
    token, _ = await node.communicate()
    assert node.returncode == 0
    ok = await redeem(client, w["widget"], w["code"], "cust_node", customer_token=token.decode())
    assert ok.status_code == 201, ok.text
