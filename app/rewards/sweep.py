"""Approve rewards whose hold has ended, in the background of every replica (no cron)."""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.rewards.service import SWEEP_BATCH, approve_due

logger = logging.getLogger("app.rewards.sweep")


async def sweep_once(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Approve due rewards in batches until none is left; returns how many were approved."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            approved = await approve_due(session, utcnow())
        total += approved
        if approved < SWEEP_BATCH:
            return total


async def run_reward_sweeps(
    sessionmaker: async_sessionmaker[AsyncSession], interval_seconds: float
) -> None:
    while True:
        try:
            approved = await sweep_once(sessionmaker)
            if approved:
                logger.info("approved %d rewards whose hold ended", approved)
        except Exception:
            # A database outage must not kill the loop; the next round retries.
            logger.exception("reward sweep failed")
        await asyncio.sleep(interval_seconds)
