"""Housekeeping every replica runs in the background (no cron): safe to run on all of them."""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import is_postgres, utcnow
from app.emails import reminders
from app.idempotency.service import delete_expired
from app.metrics import rollups
from app.rewards.service import SWEEP_BATCH, approve_due
from app.tracking.click_writer import forget_lapsed_claims

logger = logging.getLogger("app.background")


async def approve_due_rewards(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Approve rewards whose hold has ended, in batches; returns how many were approved."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            approved = await approve_due(session, utcnow())
        total += approved
        if approved < SWEEP_BATCH:
            return total


async def forget_expired_idempotency_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session, session.begin():
        return await delete_expired(session, utcnow())


async def forget_lapsed_click_claims(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Prune the unique-click claims whose duplicate window has passed."""
    async with sessionmaker() as session, session.begin():
        return await forget_lapsed_claims(session, utcnow())


async def compact_metrics_rollups(
    sessionmaker: async_sessionmaker[AsyncSession], rounds: int = 20
) -> int:
    """Sum the rollups' delta rows per key (Postgres); returns how many keys were compacted.

    A round is one transaction; a replica that finds another one compacting skips its turn.
    """
    total = 0
    for _ in range(rounds):
        async with sessionmaker() as session, session.begin():
            if not is_postgres(session):
                return total
            compacted = await rollups.compact(session)
        if compacted is None:
            return total
        total += compacted
        if compacted < rollups.COMPACT_BATCH:
            return total
    return total


async def queue_referrer_reminders(
    sessionmaker: async_sessionmaker[AsyncSession], rounds: int = 20
) -> int:
    """Reminder emails to referrers who shared nothing lately (app.emails.reminders); one
    transaction per batch. Nothing when emails are off."""
    total = 0
    for _ in range(rounds):
        async with sessionmaker() as session, session.begin():
            queued = await reminders.queue_reminders(session, utcnow())
        total += queued
        if queued < reminders.BATCH:
            break
    return total


async def run_housekeeping(
    sessionmaker: async_sessionmaker[AsyncSession], interval_seconds: float
) -> None:
    while True:
        try:
            approved = await approve_due_rewards(sessionmaker)
            forgotten = await forget_expired_idempotency_keys(sessionmaker)
            pruned = await forget_lapsed_click_claims(sessionmaker)
            compacted = await compact_metrics_rollups(sessionmaker)
            reminded = await queue_referrer_reminders(sessionmaker)
            if approved or forgotten or pruned:
                logger.info(
                    "approved %d rewards; forgot %d idempotency keys and %d click claims",
                    approved,
                    forgotten,
                    pruned,
                )
            if reminded:
                logger.info("queued %d reminder emails", reminded)
            if compacted:
                logger.info("compacted the metrics rollups of %d keys", compacted)
        except Exception:
            # A database outage must not end the loop; the next round retries.
            logger.warning("housekeeping failed", exc_info=True)
        await asyncio.sleep(interval_seconds)
