"""The ledger's states and the one table of the transitions between them.

Every function that moves a reward (the approval sweep, approve, mark-paid, reverse, refunds)
asks `TRANSITIONS` whether the move is allowed: nothing else decides it. A reward entry is
what a rule paid; a clawback entry is a negative entry that offsets a paid reward after a
refund, so it is never reversed (that would silently undo the refund's netting).
"""

from datetime import datetime
from enum import StrEnum

from app.core.errors import AppError


class RewardStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    PAID = "paid"
    REVERSED = "reversed"


class EntryType(StrEnum):
    REWARD = "reward"
    CLAWBACK = "clawback"
    # Points spent on a catalogue item (app.points): a negative points entry, born approved so
    # that it nets out of the approved (spendable) points, like a clawback out of a payout.
    SPEND = "spend"


class Recipient(StrEnum):
    REFERRER = "referrer"
    REFEREE = "referee"


class RuleKind(StrEnum):
    FIXED = "fixed"
    PERCENT = "percent"
    POINTS = "points"


class Trigger(StrEnum):
    FIRST_PURCHASE = "first_purchase"
    EVERY_PURCHASE = "every_purchase"


class FulfilmentMethod(StrEnum):
    """How a rule's rewards reach their recipient once approved (app.fulfilment delivers them).

    `ledger`: a ledger entry only (paid by hand with mark-paid). `coupon`, `store_credit` and
    `gift_card` are issued by a provider. `cash` and `donation` stay approved in the ledger
    until a payout or donation batch settles them.
    """

    LEDGER = "ledger"
    COUPON = "coupon"
    STORE_CREDIT = "store_credit"
    GIFT_CARD = "gift_card"
    CASH = "cash"
    DONATION = "donation"


class FulfilmentProvider(StrEnum):
    SHOPIFY = "shopify"
    STRIPE = "stripe"
    WEBHOOK = "webhook"


# Which providers can issue each method; a method with none needs no provider.
PROVIDERS_FOR: dict[FulfilmentMethod, frozenset[FulfilmentProvider]] = {
    FulfilmentMethod.LEDGER: frozenset(),
    FulfilmentMethod.COUPON: frozenset(FulfilmentProvider),
    FulfilmentMethod.STORE_CREDIT: frozenset(FulfilmentProvider),
    FulfilmentMethod.GIFT_CARD: frozenset({FulfilmentProvider.SHOPIFY, FulfilmentProvider.WEBHOOK}),
    FulfilmentMethod.CASH: frozenset(),
    FulfilmentMethod.DONATION: frozenset(),
}


class Action(StrEnum):
    """What is done to an entry; `release` is the end of its hold, `refund` a full refund,
    `fulfil` the provider's confirmation that the coupon, credit or gift card was issued."""

    RELEASE = "release"
    APPROVE = "approve"
    PAY = "pay"
    FULFIL = "fulfil"
    REVERSE = "reverse"
    REFUND = "refund"


# (entry type, from, action) → to. A pair missing here is refused with 409 invalid_transition.
TRANSITIONS: dict[tuple[EntryType, RewardStatus, Action], RewardStatus] = {
    (EntryType.REWARD, RewardStatus.PENDING, Action.RELEASE): RewardStatus.APPROVED,
    (EntryType.REWARD, RewardStatus.PENDING, Action.APPROVE): RewardStatus.APPROVED,
    (EntryType.REWARD, RewardStatus.APPROVED, Action.PAY): RewardStatus.PAID,
    # Issued by its provider: the value has reached the recipient, as a payout would.
    (EntryType.REWARD, RewardStatus.APPROVED, Action.FULFIL): RewardStatus.PAID,
    (EntryType.REWARD, RewardStatus.PENDING, Action.REVERSE): RewardStatus.REVERSED,
    (EntryType.REWARD, RewardStatus.APPROVED, Action.REVERSE): RewardStatus.REVERSED,
    (EntryType.REWARD, RewardStatus.PENDING, Action.REFUND): RewardStatus.REVERSED,
    (EntryType.REWARD, RewardStatus.APPROVED, Action.REFUND): RewardStatus.REVERSED,
    # A clawback is born approved (it nets out of what is owed) and is settled with the payout.
    (EntryType.CLAWBACK, RewardStatus.APPROVED, Action.PAY): RewardStatus.PAID,
    # Reversing a spend gives the points back (say, after reversing the item's reward that
    # could not be delivered); it is never paid: the item's own reward entry is.
    (EntryType.SPEND, RewardStatus.APPROVED, Action.REVERSE): RewardStatus.REVERSED,
}

# Why a refused move is refused, for the message; the table alone decides.
_HINTS = {
    (EntryType.REWARD, RewardStatus.PAID, Action.REVERSE): "a refund claws a paid reward back",
    (EntryType.REWARD, RewardStatus.PENDING, Action.PAY): "approve it first",
    (EntryType.REWARD, RewardStatus.PENDING, Action.FULFIL): "it is issued once approved",
    (EntryType.CLAWBACK, RewardStatus.APPROVED, Action.REVERSE): (
        "a clawback offsets a refunded, paid reward and stays"
    ),
    (EntryType.SPEND, RewardStatus.APPROVED, Action.PAY): (
        "spent points are settled by the item's own reward entry"
    ),
}


_PAST = {
    Action.RELEASE: "released",
    Action.APPROVE: "approved",
    Action.PAY: "paid",
    Action.FULFIL: "fulfilled",
    Action.REVERSE: "reversed",
    Action.REFUND: "reversed by a refund",
}


class InvalidTransition(AppError):
    status, code, title = 409, "invalid_transition", "The reward cannot make that transition"


def next_status(entry_type: EntryType, status: RewardStatus, action: Action) -> RewardStatus:
    """The status after `action`, or InvalidTransition when the table does not allow it."""
    target = TRANSITIONS.get((entry_type, status, action))
    if target is None:
        hint = _HINTS.get((entry_type, status, action))
        entry = {
            EntryType.REWARD: "reward",
            EntryType.CLAWBACK: "clawback entry",
            EntryType.SPEND: "points spend",
        }[entry_type]
        verb = _PAST[action]
        raise InvalidTransition(
            f"A {status} {entry} cannot be {verb}" + (f": {hint}." if hint else ".")
        )
    return target


def reads_as(
    entry_type: EntryType, status: RewardStatus, hold_until: datetime, now: datetime
) -> RewardStatus:
    """What a read shows: a pending reward whose hold has ended is approved.

    Reads never write: the approval sweep (app.background) makes the stored status agree within
    a housekeeping interval, and emits `reward.approved` then.
    """
    if (
        status == RewardStatus.PENDING
        and hold_until <= now
        and (entry_type, status, Action.RELEASE) in TRANSITIONS
    ):
        return TRANSITIONS[(entry_type, status, Action.RELEASE)]
    return status


def statuses_allowing(entry_type: EntryType, action: Action) -> frozenset[RewardStatus]:
    """The statuses from which `action` is allowed, for bulk updates (the approval sweep)."""
    return frozenset(
        status for (entry, status, act) in TRANSITIONS if entry == entry_type and act == action
    )
