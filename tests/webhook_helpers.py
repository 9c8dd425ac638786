"""Shared by the outbound webhook tests: dispatcher settings, endpoint registration, draining the
outbox, reading deliveries and the delivery counters."""

from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import AsyncClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from app.core.config import Settings
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.outbox import EVENT_TYPES
from tests.factories import auth
from tests.settings import settings_for_tests

FAR = timedelta(days=1)


def dispatch_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"webhook_retry_base_seconds": 1, "webhook_timeout_seconds": 2}
    return settings_for_tests(**(values | overrides))


async def make_endpoint(
    client: AsyncClient, key: str, url: str, event_types: Any = EVENT_TYPES, **extra: Any
) -> dict[str, Any]:
    body = {"url": url, "event_types": list(event_types)} | extra
    response = await client.post("/v1/webhook-endpoints", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return response.json()


async def drain(worker: Dispatcher, *, later: bool = False, rounds: int = 30) -> int:
    """Dispatch rounds until nothing is due; `later` moves the clock a day on every round."""
    sent = 0
    for round_ in range(1, rounds + 1):
        count = await worker.run_once(datetime.now(UTC) + round_ * FAR if later else None)
        if count == 0:
            return sent
        sent += count
    raise AssertionError("the outbox did not drain")


async def deliveries(client: AsyncClient, key: str, endpoint_id: str, **params: Any) -> list[Any]:
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    rows: list[Any] = response.json()["data"]
    return rows


def outcome_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("referral_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


async def count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)
