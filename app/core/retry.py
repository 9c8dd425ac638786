"""What the outbox dispatchers (webhooks, emails) share: retry timing and the polling loop."""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta


def backoff(
    attempts: int, base_seconds: float, max_delay_seconds: float, rng: random.Random
) -> timedelta:
    """The wait before the next attempt: exponential in `attempts`, capped, with ±25% jitter."""
    delay = min(base_seconds * 2 ** min(max(attempts, 1) - 1, 32), max_delay_seconds)
    return timedelta(seconds=delay * rng.uniform(0.75, 1.25))


async def poll(
    run_round: Callable[[], Awaitable[int]],
    *,
    interval_seconds: float,
    batch_size: int,
    logger: logging.Logger,
    what: str,
) -> None:
    """Rounds until cancelled; after a full batch the next round starts at once.

    A failed round (a database outage) is logged and retried after the interval.
    """
    while True:
        try:
            done = await run_round()
        except Exception:
            logger.warning("%s round failed", what, exc_info=True)
            done = 0
        if done < batch_size:
            await asyncio.sleep(interval_seconds)
