"""Issues what the ledger approved: claim due fulfilments, call their providers, record it all.

Like app.webhooks.dispatcher (sharing app.core.retries): a round claims due rows with
FOR UPDATE SKIP LOCKED (Postgres; SQLite has one writer) and leases them by moving
`next_attempt_at` past what an attempt may take, in a short transaction; the providers are
called outside any transaction, with the reward's id as the idempotency key; each outcome is
recorded in its own transaction with the reward locked first (the ledger's lock order).

Exactly once: an attempt cut off before its outcome was recorded (a crash, a lost answer)
leaves `in_flight` set; every later attempt is `retrying`, and the provider then finds what
the lost one made instead of making it again (app.fulfilment.providers.base). A reward
reversed while its attempt was out is not issued twice either: the coupon the attempt made is
disabled (`revoking`).
"""

import asyncio
import logging
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from uuid import UUID

import httpx
import stripe
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.conversions.models import Conversion
from app.core.config import Settings
from app.core.db import is_postgres, utcnow
from app.core.money import quantize
from app.core.retries import backoff, poll
from app.core.telemetry import FULFILMENT_ATTEMPTS
from app.fulfilment.jobs import brief
from app.fulfilment.models import Fulfilment, FulfilmentCredential
from app.fulfilment.providers.base import (
    Credential,
    Issued,
    Job,
    Provider,
    ProviderError,
    Revoked,
)
from app.fulfilment.providers.shopify import Shopify
from app.fulfilment.providers.stripe import Stripe
from app.fulfilment.providers.webhook import FulfilmentWebhook
from app.fulfilment.states import CLAIMABLE, FulfilmentStatus, Move, moved
from app.referrers.models import Referrer
from app.rewards.models import Reward
from app.rewards.schemas import RewardOut
from app.rewards.states import (
    TRANSITIONS,
    Action,
    EntryType,
    FulfilmentMethod,
    FulfilmentProvider,
    Recipient,
    RewardStatus,
    next_status,
)
from app.webhooks.outbox import emit, emit_reward_fulfilled

logger = logging.getLogger("app.fulfilment")

CONCURRENT_CALLS = 10
# The most provider requests one attempt makes (a lookup, the customer, two creates).
CALLS_PER_JOB = 4
LEASE_MARGIN_SECONDS = 5
USER_AGENT = "referral-service-fulfilment/1"
Outcome = Issued | Revoked | ProviderError


class Dispatcher:
    """One per process; `run_once` is a round (tests call it directly), `run` loops."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        providers: Mapping[FulfilmentProvider, Provider] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        timeout = settings.fulfilment_timeout_seconds
        self._http = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"user-agent": USER_AGENT}
        )
        self._stripe_http = stripe.HTTPXClient(timeout=timeout)
        self.providers: Mapping[FulfilmentProvider, Provider] = providers or {
            FulfilmentProvider.SHOPIFY: Shopify(self._http, settings),
            FulfilmentProvider.STRIPE: Stripe(self._stripe_http, settings),
            FulfilmentProvider.WEBHOOK: FulfilmentWebhook(self._http, settings),
        }
        self.budget = CALLS_PER_JOB * timeout
        # Past the longest attempt: a claimed job is tried again only if this replica died.
        self.lease = timedelta(seconds=self.budget + LEASE_MARGIN_SECONDS)
        self._random = random.Random()

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._stripe_http.close_async()

    async def run(self) -> None:
        await poll(
            self.run_once,
            self.settings.fulfilment_dispatch_interval_seconds,
            self.settings.fulfilment_dispatch_batch_size,
            logger,
            "fulfilment dispatch",
        )

    async def run_once(self, now: datetime | None = None) -> int:
        """Claim the due fulfilments, call their providers, record the outcomes; returns how
        many were attempted. `now` stands in for the clock (tests)."""
        jobs = await self._claim(now or utcnow())
        if not jobs:
            return 0
        limit = asyncio.Semaphore(CONCURRENT_CALLS)

        async def attempt(job: Job) -> Outcome:
            async with limit:
                return await self._attempt(job)

        outcomes = await asyncio.gather(*(attempt(job) for job in jobs))
        for job, outcome in zip(jobs, outcomes, strict=True):
            await self._record(job, outcome, now or utcnow())
        return len(jobs)

    async def _claim(self, now: datetime) -> list[Job]:
        query = (
            select(Fulfilment)
            .where(Fulfilment.status.in_(CLAIMABLE), Fulfilment.next_attempt_at <= now)
            .order_by(Fulfilment.next_attempt_at, Fulfilment.id)
            .limit(self.settings.fulfilment_dispatch_batch_size)
        )
        async with self.sessionmaker() as session, session.begin():
            if is_postgres(session):
                query = query.with_for_update(skip_locked=True)
            rows = list(await session.scalars(query))
            if not rows:
                return []
            rewards = {
                reward.id: reward
                for reward in await session.scalars(
                    select(Reward).where(Reward.id.in_({row.reward_id for row in rows}))
                )
            }
            credentials = {
                (credential.program_id, credential.provider): credential
                for credential in await session.scalars(
                    select(FulfilmentCredential).where(
                        FulfilmentCredential.program_id.in_({row.program_id for row in rows})
                    )
                )
            }
            emails = await _emails(session, list(rewards.values()))
            jobs = []
            for row in rows:
                reward = rewards[row.reward_id]
                issuing = row.status == FulfilmentStatus.PENDING
                if issuing and not _may_fulfil(reward):
                    # Not approved (any more): there is nothing to issue.
                    row.status = FulfilmentStatus.CANCELLED
                    row.error, row.next_attempt_at = f"the reward is {reward.status}", None
                    continue
                retrying = row.attempts > 0 or row.in_flight
                row.attempts += 1
                row.in_flight = True
                row.last_attempt_at, row.updated_at = now, now
                row.next_attempt_at = now + self.lease
                if row.amount is None:
                    row.amount = reward.amount  # what every attempt asks for from now on
                credential = credentials.get((row.program_id, row.provider))
                jobs.append(
                    Job(
                        fulfilment_id=row.id,
                        reward_id=row.reward_id,
                        program_id=row.program_id,
                        action="issue" if issuing else "revoke",
                        method=row.method,
                        provider=row.provider,
                        credential=(
                            Credential(credential.shop_domain, credential.url, credential.secret)
                            if credential is not None
                            else None
                        ),
                        amount=quantize(row.amount, row.currency),
                        currency=row.currency,
                        percent_off=row.percent_off,
                        code=row.code,
                        recipient=reward.recipient,
                        recipient_id=reward.recipient_id,
                        email=emails.get(reward.id),
                        reference=row.reference,
                        details=dict(row.details or {}),
                        retrying=retrying,
                        due_since=row.due_since or row.created_at,
                    )
                )
        return jobs

    async def _attempt(self, job: Job) -> Outcome:
        provider = self.providers[job.provider]
        try:
            async with asyncio.timeout(self.budget):
                if job.action == "issue":
                    return await provider.issue(job)
                return await provider.revoke(job)
        except ProviderError as exc:
            return exc
        except TimeoutError:
            return ProviderError(f"{job.provider} took longer than {self.budget:g} s.")
        except Exception as exc:  # a bug or a surprise answer: retried, and logged
            logger.warning("fulfilment %s: %s failed", job.fulfilment_id, job.action, exc_info=True)
            return ProviderError(f"Unexpected error: {type(exc).__name__}.")

    async def _record(self, job: Job, outcome: Outcome, now: datetime) -> None:
        async with self.sessionmaker() as session, session.begin():
            reward = await session.scalar(
                select(Reward)
                .where(Reward.id == job.reward_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            row = await session.scalar(
                select(Fulfilment)
                .where(Fulfilment.id == job.fulfilment_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if row is None or reward is None:
                return
            row.in_flight, row.updated_at = False, now
            if isinstance(outcome, ProviderError):
                result = await self._failed(session, row, reward, job, outcome, now)
            elif isinstance(outcome, Issued):
                result = await self._issued(session, row, reward, outcome, now)
            else:
                result = await self._revoked(session, row, reward, outcome, now)
            FULFILMENT_ATTEMPTS.labels(job.provider, result).inc()

    async def _issued(
        self, session: AsyncSession, row: Fulfilment, reward: Reward, issued: Issued, now: datetime
    ) -> str:
        if row.status not in (FulfilmentStatus.PENDING, FulfilmentStatus.CANCELLED):
            return "duplicate"  # a twin attempt (an expired lease) recorded it first
        row.reference = issued.reference
        row.code = issued.code or row.code
        row.details, row.error, row.fulfilled_at = issued.details, None, now
        if row.status == FulfilmentStatus.PENDING and _may_fulfil(reward):
            row.status, row.next_attempt_at = FulfilmentStatus.FULFILLED, None
            reward.status = next_status(reward.entry_type, reward.status, Action.FULFIL)
            reward.paid_at = now
            reward.payout_reference = issued.reference[:200]
            await session.flush()
            await emit_reward_fulfilled(session, reward, _reward_out(reward, row))
            return "fulfilled"
        # Reversed or paid by hand while the call was out: take the coupon back.
        self._take_back(row, now, "issued after the reward was reversed or paid by hand")
        return "taken_back"

    def _take_back(self, row: Fulfilment, now: datetime, why: str) -> None:
        """What an attempt made for a reward that no longer wants it: a coupon is disabled."""
        row.status = FulfilmentStatus.CANCELLED
        coupon = row.method == FulfilmentMethod.COUPON
        target = moved(row.status, Move.ISSUED if coupon else Move.KEEP)
        assert target is not None
        row.status = target
        if coupon:
            row.attempts, row.due_since, row.next_attempt_at = 0, now, now
            row.error = f"{why}: disabling the code"
        else:
            row.next_attempt_at = None
            row.error = f"{why}: a store credit or gift card cannot be taken back"
        logger.warning("fulfilment %s: %s", row.id, why)

    async def _revoked(
        self,
        session: AsyncSession,
        row: Fulfilment,
        reward: Reward,
        revoked: Revoked,
        now: datetime,
    ) -> str:
        if row.status != FulfilmentStatus.REVOKING:
            return "duplicate"
        row.next_attempt_at = None
        if revoked.used:
            row.status = FulfilmentStatus.KEPT
            row.error = "the code was used before the clawback: the clawback nets out of a payout"
            return "kept"
        row.status, row.revoked_at, row.error = FulfilmentStatus.REVOKED, now, None
        # The value came back: the clawback entries that offset the reward are settled.
        clawbacks = list(
            await session.scalars(
                select(Reward)
                .where(
                    Reward.adjusts_reward_id == reward.id,
                    Reward.entry_type == EntryType.CLAWBACK,
                    Reward.status == RewardStatus.APPROVED,
                )
                .with_for_update()
            )
        )
        for clawback in clawbacks:
            clawback.status = next_status(clawback.entry_type, clawback.status, Action.PAY)
            clawback.paid_at = now
            clawback.payout_reference = f"revoked {row.code}"[:200]
        await session.flush()
        for clawback in clawbacks:
            await emit(
                session, clawback.program_id, "reward.paid", RewardOut.model_validate(clawback)
            )
        return "revoked"

    async def _failed(
        self,
        session: AsyncSession,
        row: Fulfilment,
        reward: Reward,
        job: Job,
        error: ProviderError,
        now: datetime,
    ) -> str:
        row.error = error.message
        if row.status == FulfilmentStatus.CANCELLED:
            if error.retryable and row.method == FulfilmentMethod.COUPON:
                # Cut off while the reward was reversed: a code may exist; disable it if so.
                self._take_back(row, now, "the last attempt's outcome is unknown")
            return "cancelled"
        if row.status not in CLAIMABLE:
            return "duplicate"
        window = timedelta(hours=self.settings.fulfilment_retry_window_hours)
        retry_at = now + self._backoff(row.attempts)
        if error.retryable and retry_at <= (row.due_since or row.created_at) + window:
            row.next_attempt_at = retry_at
            return "retrying"
        target = moved(row.status, Move.GIVE_UP)
        assert target is not None
        row.status, row.next_attempt_at = target, None
        logger.warning("fulfilment %s: %s failed for good", row.id, job.action)
        if job.action == "issue":
            await emit(
                session, reward.program_id, "reward.fulfilment_failed", _reward_out(reward, row)
            )
        return "failed"

    def _backoff(self, attempts: int) -> timedelta:
        return backoff(
            attempts,
            self.settings.fulfilment_retry_base_seconds,
            self.settings.fulfilment_retry_max_delay_seconds,
            self._random,
        )


def _may_fulfil(reward: Reward) -> bool:
    return (reward.entry_type, reward.status, Action.FULFIL) in TRANSITIONS


def _reward_out(reward: Reward, row: Fulfilment) -> RewardOut:
    return RewardOut.model_validate(reward).model_copy(update={"fulfilment": brief(row)})


async def _emails(session: AsyncSession, rewards: list[Reward]) -> dict[UUID, str | None]:
    """The email known for each reward's recipient (the referrer's, or the referee's from the
    purchase), for providers that find customers by email: two statements at most."""
    referrer_ids = {r.referrer_id for r in rewards if r.recipient == Recipient.REFERRER}
    conversion_ids = {r.conversion_id for r in rewards if r.recipient == Recipient.REFEREE}
    referrers: dict[UUID, str | None] = {}
    conversions: dict[UUID, str | None] = {}
    if referrer_ids:
        rows = await session.execute(
            select(Referrer.id, Referrer.email).where(Referrer.id.in_(referrer_ids))
        )
        referrers = {referrer_id: email for referrer_id, email in rows}
    if conversion_ids:
        rows = await session.execute(
            select(Conversion.id, Conversion.email).where(Conversion.id.in_(conversion_ids))
        )
        conversions = {conversion_id: email for conversion_id, email in rows}
    return {
        r.id: (
            referrers.get(r.referrer_id)
            if r.recipient == Recipient.REFERRER
            else conversions.get(r.conversion_id)
            if r.conversion_id is not None
            else None
        )
        for r in rewards
    }
