"""Payout and donation batches: their states, the one table of moves, and payout methods.

A batch is born `open` with its rewards locked to it (no reward is in two batches); `mark-paid`
settles every reward of it through the ledger's transitions (`paid`), `cancel` releases them.
A paid or cancelled batch does not move again.
"""

from enum import StrEnum

from app.core.errors import AppError


class BatchKind(StrEnum):
    PAYOUT = "payout"  # cash rewards, paid to each referrer
    DONATION = "donation"  # donation rewards, given to the charity each referrer chose


class BatchStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    CANCELLED = "cancelled"


class BatchMove(StrEnum):
    PAY = "pay"
    CANCEL = "cancel"


class LineStatus(StrEnum):
    """A line's rewards are in the batch (`included`), or the referrer was listed with what
    they are owed but left out, their rewards waiting for a later batch."""

    INCLUDED = "included"
    NO_PAYOUT_DETAILS = "no_payout_details"
    NO_CHARITY = "no_charity"


class PayoutMethod(StrEnum):
    """How a referrer is paid: `paypal` (an email, phone or PayPal PayerID: the PayPal
    Payouts file), or `other` (any recipient id the merchant pays by hand: an IBAN, a handle)."""

    PAYPAL = "paypal"
    OTHER = "other"


BATCH_MOVES: dict[tuple[BatchStatus, BatchMove], BatchStatus] = {
    (BatchStatus.OPEN, BatchMove.PAY): BatchStatus.PAID,
    (BatchStatus.OPEN, BatchMove.CANCEL): BatchStatus.CANCELLED,
}


class BatchNotOpen(AppError):
    status, code, title = 409, "batch_not_open", "The batch is already paid or cancelled"


def batch_moved(status: BatchStatus, move: BatchMove) -> BatchStatus:
    target = BATCH_MOVES.get((status, move))
    if target is None:
        verb = "paid" if move == BatchMove.PAY else "cancelled"
        raise BatchNotOpen(f"A {status} batch cannot be {verb}.")
    return target
