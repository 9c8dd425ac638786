"""What the outbox dispatchers share (webhooks, fulfilment): the polling loop and the backoff.

Each dispatcher claims due rows with FOR UPDATE SKIP LOCKED and leases them by moving their
next attempt past the time an attempt can take; this module holds only the generic parts.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta


def backoff(
    attempts: int, base_seconds: float, max_seconds: float, rng: random.Random
) -> timedelta:
    """The wait after `attempts` failed attempts: exponential, capped, with ±25% jitter."""
    delay = min(base_seconds * 2 ** min(attempts - 1, 32), max_seconds)
    return timedelta(seconds=delay * rng.uniform(0.75, 1.25))


async def poll(
    one_round: Callable[[], Awaitable[int]],
    interval_seconds: float,
    batch_size: int,
    logger: logging.Logger,
    what: str,
) -> None:
    """Rounds until cancelled: a full round goes again at once, a failed one (a database
    outage) is logged and retried after the interval."""
    while True:
        try:
            done = await one_round()
        except Exception:
            logger.warning("%s round failed", what, exc_info=True)
            done = 0
        if done < batch_size:
            await asyncio.sleep(interval_seconds)
