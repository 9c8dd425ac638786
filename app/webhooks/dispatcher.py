"""Delivers the outbox: claim due deliveries, POST them signed, record the answer, retry later.

Safe with several replicas: a round claims rows with FOR UPDATE SKIP LOCKED (Postgres; SQLite
has one writer at a time) and leases them by moving `next_attempt_at` past the HTTP timeout,
so no transaction stays open during a request and a crashed replica's deliveries are picked
up again when the lease ends. A delivery waits while an earlier one of the same object to
the same endpoint is pending, so each object's events arrive in order. Delivery is at least
once: receivers dedupe on `webhook-id`.

Signatures follow the Standard Webhooks specification: `webhook-signature` is
`v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`, keyed with the
base64-decoded part of the endpoint secret after `whsec_`.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import httpx
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app.core.config import Settings
from app.core.db import is_postgres, utcnow
from app.core.retry import backoff, poll
from app.core.telemetry import WEBHOOK_DELIVERIES
from app.webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.webhooks.targets import UnsafeTarget, check_target

logger = logging.getLogger("app.webhooks")

SECRET_PREFIX = "whsec_"
EXCERPT_BYTES = 1024
CONCURRENT_REQUESTS = 10
USER_AGENT = "referral-service-webhooks/1"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def message_id(event_id: UUID) -> str:
    return f"msg_{event_id.hex}"


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks `webhook-signature` header value."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass(frozen=True)
class Job:
    delivery_id: UUID
    url: str
    secret: str
    msg_id: str
    body: str


@dataclass(frozen=True)
class Answer:
    status: int | None
    excerpt: str | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Dispatcher:
    """One per process; `run_once` is a round (tests call it directly), `run` loops."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self._http = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": USER_AGENT},
        )
        self._random = random.Random()
        # Past the HTTP timeout: a claimed delivery is retried only if this replica died.
        self.lease = timedelta(seconds=settings.webhook_timeout_seconds + 60)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self) -> None:
        """Rounds until cancelled; a failed round (database outage) is logged and retried."""
        await poll(
            self.run_once,
            interval_seconds=self.settings.webhook_dispatch_interval_seconds,
            batch_size=self.settings.webhook_dispatch_batch_size,
            logger=logger,
            what="webhook dispatch",
        )

    async def run_once(self, now: datetime | None = None) -> int:
        """Claim the due deliveries, send them, record the answers; returns how many were sent.

        `now` stands in for the clock when deciding what is due and when to retry (tests).
        """
        claimed_at = now or utcnow()
        jobs = await self._claim(claimed_at)
        if not jobs:
            return 0
        limit = asyncio.Semaphore(CONCURRENT_REQUESTS)

        async def send(job: Job) -> Answer:
            async with limit:
                return await self._send(job)

        answers = await asyncio.gather(*(send(job) for job in jobs))
        await self._record(list(zip(jobs, answers, strict=True)), now or utcnow())
        return len(jobs)

    async def _claim(self, now: datetime) -> list[Job]:
        delivery = WebhookDelivery
        earlier = aliased(WebhookDelivery)
        waits_for_earlier = exists().where(
            earlier.endpoint_id == delivery.endpoint_id,
            earlier.object_id == delivery.object_id,
            earlier.status == DeliveryStatus.PENDING,
            or_(
                earlier.ordered_at < delivery.ordered_at,
                and_(earlier.ordered_at == delivery.ordered_at, earlier.id < delivery.id),
            ),
        )
        query = (
            select(delivery, WebhookEndpoint, WebhookEvent)
            .join(WebhookEndpoint, WebhookEndpoint.id == delivery.endpoint_id)
            .join(WebhookEvent, WebhookEvent.id == delivery.event_id)
            .where(
                delivery.status == DeliveryStatus.PENDING,
                delivery.next_attempt_at <= now,
                WebhookEndpoint.enabled.is_(True),
                ~waits_for_earlier,
            )
            .order_by(delivery.next_attempt_at, delivery.id)
            .limit(self.settings.webhook_dispatch_batch_size)
        )
        async with self.sessionmaker() as session, session.begin():
            if is_postgres(session):
                query = query.with_for_update(of=delivery, skip_locked=True)
            rows = (await session.execute(query)).all()
            jobs = []
            for row, endpoint, event in rows:
                row.attempts += 1
                row.next_attempt_at = now + self.lease
                jobs.append(
                    Job(
                        delivery_id=row.id,
                        url=endpoint.url,
                        secret=endpoint.secret,
                        msg_id=message_id(event.id),
                        body=_body(event),
                    )
                )
        return jobs

    async def _send(self, job: Job) -> Answer:
        started = time.perf_counter()

        def answer(status: int | None, excerpt: str | None, error: str | None) -> Answer:
            elapsed = int((time.perf_counter() - started) * 1000)
            return Answer(status, excerpt, error, elapsed)

        try:
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                await check_target(job.url, self.settings)
                timestamp = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": job.msg_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": sign(job.secret, job.msg_id, timestamp, job.body),
                }
                async with self._http.stream(
                    "POST", job.url, content=job.body.encode(), headers=headers
                ) as response:
                    excerpt = await _excerpt(response)
                return answer(response.status_code, excerpt, None)
        except (TimeoutError, httpx.TimeoutException):
            return answer(None, None, "timeout")
        except UnsafeTarget as exc:
            return answer(None, None, f"refused target: {exc}"[:200])
        except httpx.HTTPError as exc:
            return answer(None, None, f"connection failed: {type(exc).__name__}")

    async def _record(self, results: list[tuple[Job, Answer]], now: datetime) -> None:
        window = timedelta(hours=self.settings.webhook_retry_window_hours)
        async with self.sessionmaker() as session, session.begin():
            for job, answer in results:
                row = await session.scalar(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.id == job.delivery_id)
                    .with_for_update()
                )
                if row is None:  # the endpoint was deleted while the request was out
                    continue
                session.add(
                    WebhookAttempt(
                        created_at=now,
                        delivery_id=row.id,
                        response_status=answer.status,
                        response_excerpt=answer.excerpt,
                        error=answer.error,
                        duration_ms=answer.duration_ms,
                    )
                )
                row.last_attempt_at = now
                row.response_status = answer.status
                row.response_excerpt = answer.excerpt
                row.error = answer.error
                if answer.succeeded:
                    row.status, row.delivered_at = DeliveryStatus.SUCCEEDED, now
                    outcome = "succeeded"
                else:
                    retry_at = now + self._backoff(row.attempts)
                    if retry_at > row.created_at + window:
                        row.status, outcome = DeliveryStatus.FAILED, "failed"
                    else:
                        row.next_attempt_at, outcome = retry_at, "retrying"
                WEBHOOK_DELIVERIES.labels(outcome).inc()
                if outcome == "failed":
                    logger.warning("webhook delivery %s failed for good", row.id)

    def _backoff(self, attempts: int) -> timedelta:
        return backoff(
            attempts,
            self.settings.webhook_retry_base_seconds,
            self.settings.webhook_retry_max_delay_seconds,
            self._random,
        )


def _body(event: WebhookEvent) -> str:
    return json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False)


async def _excerpt(response: httpx.Response) -> str:
    received = b""
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= EXCERPT_BYTES:
            break
    return received[:EXCERPT_BYTES].decode("utf-8", errors="replace")
