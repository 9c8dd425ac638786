"""A fulfilment's states and the one table of moves between them (like the ledger's).

A fulfilment is born `waiting` with its reward (pending) or `pending` (already approved); the
dispatcher issues a pending one (`fulfilled`) or gives up after the retry window (`failed`,
retryable). A reversal or a payment by hand before it is issued `cancelled`s it. A coupon
clawed back in full after it was issued is `revoking` until its provider disabled it
(`revoked`), or found it used (`kept`: the clawback then nets out of the next payout).
"""

from enum import StrEnum

from app.core.errors import AppError


class FulfilmentStatus(StrEnum):
    WAITING = "waiting"
    PENDING = "pending"
    FULFILLED = "fulfilled"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REVOKING = "revoking"
    REVOKED = "revoked"
    KEPT = "kept"
    REVOKE_FAILED = "revoke_failed"


class Move(StrEnum):
    RELEASE = "release"  # the reward was approved
    CANCEL = "cancel"  # the reward was reversed, or paid by hand
    ISSUED = "issued"  # the provider issued it
    GIVE_UP = "give_up"  # the retry window ended, or the provider refused for good
    RETRY = "retry"  # ops: try again now
    REVOKE = "revoke"  # clawed back in full: disable the code
    KEEP = "keep"  # clawed back, but it cannot be taken back (used, or not a coupon)
    REVOKED = "revoked"  # the provider disabled the code


S = FulfilmentStatus
MOVES: dict[tuple[FulfilmentStatus, Move], FulfilmentStatus] = {
    (S.WAITING, Move.RELEASE): S.PENDING,
    (S.WAITING, Move.CANCEL): S.CANCELLED,
    (S.PENDING, Move.CANCEL): S.CANCELLED,
    (S.FAILED, Move.CANCEL): S.CANCELLED,
    (S.PENDING, Move.ISSUED): S.FULFILLED,
    (S.PENDING, Move.GIVE_UP): S.FAILED,
    (S.PENDING, Move.RETRY): S.PENDING,
    (S.FAILED, Move.RETRY): S.PENDING,
    # Issued while the reward was being reversed: take it back.
    (S.CANCELLED, Move.ISSUED): S.REVOKING,
    (S.FULFILLED, Move.REVOKE): S.REVOKING,
    (S.FULFILLED, Move.KEEP): S.KEPT,
    (S.CANCELLED, Move.KEEP): S.KEPT,
    (S.REVOKING, Move.REVOKED): S.REVOKED,
    (S.REVOKING, Move.KEEP): S.KEPT,
    (S.REVOKING, Move.GIVE_UP): S.REVOKE_FAILED,
    (S.REVOKING, Move.RETRY): S.REVOKING,
    (S.REVOKE_FAILED, Move.RETRY): S.REVOKING,
}

# The dispatcher claims these when due: issue a pending one, disable a revoking one.
CLAIMABLE = frozenset({S.PENDING, S.REVOKING})


class NotRetryable(AppError):
    status, code, title = 409, "fulfilment_not_retryable", "The fulfilment cannot be retried"


def moved(status: FulfilmentStatus, move: Move) -> FulfilmentStatus | None:
    """The status after `move`, or None when the table does not allow it."""
    return MOVES.get((status, move))


def statuses_allowing(move: Move) -> frozenset[FulfilmentStatus]:
    return frozenset(status for (status, each) in MOVES if each == move)
