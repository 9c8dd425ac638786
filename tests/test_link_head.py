"""HEAD /r/{code}: link checkers and previews get the GET's redirect, and no click is recorded."""

from typing import Any
from urllib.parse import parse_qs, urlsplit

from httpx import AsyncClient
from sqlalchemy import func, select

from app.tracking.models import Click
from tests.factories import BROWSER_UA, auth, make_key, make_program, make_referrer, patch_code


async def _clicks(app: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Click)) or 0)


def _without_click_id(location: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(location)
    query = parse_qs(parts.query)
    query.pop("click_id", None)
    return parts._replace(query="").geturl(), query


async def test_head_redirects_like_get_and_counts_nothing(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin, landing_url="https://shop.example.com/w?lang=en")
    code = (await make_referrer(client, admin, program["id"]))["default_code"]["code"]
    browser = {"User-Agent": BROWSER_UA}

    head = await client.head(f"/r/{code}", headers=browser)
    assert head.status_code == 302
    assert head.content == b""
    assert await _clicks(app) == 0
    get = await client.get(f"/r/{code}", headers=browser)
    assert get.status_code == 302
    assert "click_id" in parse_qs(urlsplit(get.headers["location"]).query)
    assert _without_click_id(head.headers["location"]) == _without_click_id(get.headers["location"])
    assert parse_qs(urlsplit(head.headers["location"]).query) == {"lang": ["en"], "ref": [code]}
    for _ in range(3):
        assert (await client.head(f"/r/{code}", headers=browser)).status_code == 302
    assert await _clicks(app) == 1
    summary = await client.get(f"/v1/programs/{program['id']}/metrics/summary", headers=auth(admin))
    assert summary.json()["unique_clicks"] == 1


async def test_head_of_a_disabled_code_has_no_ref(client: AsyncClient, app: Any) -> None:
    admin = await make_key(app)
    program = await make_program(client, admin)
    code = (await make_referrer(client, admin, program["id"]))["default_code"]["code"]
    await patch_code(client, admin, code, disabled=True)
    head = await client.head(f"/r/{code}")
    assert head.status_code == 302
    assert "ref" not in parse_qs(urlsplit(head.headers["location"]).query)
    assert await _clicks(app) == 0


async def test_head_of_an_unknown_code_is_404(client: AsyncClient) -> None:
    head = await client.head("/r/NOPE23456")
    assert head.status_code == 404
    assert head.headers["content-type"].startswith("text/html")
