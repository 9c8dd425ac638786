"""/docs and /redoc served without a CDN; /metrics behind a bearer token, required in production."""

import re
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient

from app.http.observability import ensure_metrics_protected
from app.main import create_app
from tests.settings import settings_for_tests

METRICS_TOKEN = "metrics-token-0123456789abcdef"


def _referenced_urls(html: str) -> list[str]:
    """Every URL the page loads: src/href attributes and the strings its script passes on."""
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    script_urls = re.findall(r"""\burl\s*:\s*['"]([^'"]+)['"]""", html)
    script_urls += re.findall(r"""spec-url\s*=\s*["']([^"']+)["']""", html)
    return attributes + script_urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_load_only_from_the_service(client: AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    urls = _referenced_urls(html)
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url}"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert "://" not in html  # no absolute URL anywhere, so nothing from another origin


async def test_the_swagger_assets_are_the_real_bundle(client: AsyncClient) -> None:
    html = (await client.get("/docs")).text
    [script] = [url for url in _referenced_urls(html) if url.endswith("swagger-ui-bundle.js")]
    bundle = await client.get(script)
    assert "javascript" in bundle.headers["content-type"]
    assert len(bundle.content) > 500_000  # the whole of Swagger UI, not a stub
    # Swagger UI would otherwise show a badge loaded from swagger.io's online validator.
    assert '"validatorUrl": null' in html


async def _metrics_client(**overrides: object) -> tuple[AsyncClient, Any]:
    app = create_app(settings_for_tests(database_pool_size=2, **overrides))
    transport = ASGITransport(app=app)
    return AsyncClient(transport=transport, base_url="http://testserver"), app


async def test_metrics_want_the_token_when_one_is_set(client: AsyncClient) -> None:
    http, app = await _metrics_client(metrics_token=METRICS_TOKEN)
    try:
        missing = await http.get("/metrics")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "referral_http_requests_total" not in missing.text
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        right = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert right.status_code == 200
        assert "referral_http_requests_total" in right.text
    finally:
        await http.aclose()
        await app.state.engine.dispose()


async def test_metrics_are_open_without_a_token_outside_production(client: AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 200


def _production(**overrides: object) -> Any:
    return settings_for_tests(
        environment="production",
        ip_hash_salt="a-real-secret-salt",
        pseudonym_key="a-real-secret-pseudonym-key",
        database_url="postgresql+asyncpg://referral@127.0.0.1:1/referral",
        **overrides,
    )


def test_production_refuses_to_start_with_metrics_open() -> None:
    with pytest.raises(RuntimeError, match="REFERRAL_METRICS_TOKEN"):
        create_app(_production())
    # Protected by a token, or said to be reachable by Prometheus only: it starts.
    ensure_metrics_protected(_production(metrics_token=METRICS_TOKEN))
    ensure_metrics_protected(_production(metrics_public=True))


def test_a_metrics_token_is_long_enough() -> None:
    with pytest.raises(ValueError, match="REFERRAL_METRICS_TOKEN"):
        settings_for_tests(metrics_token="short")
    assert settings_for_tests(metrics_token="").metrics_token is None
