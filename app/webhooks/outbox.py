"""Events into the outbox, inside the caller's transaction.

`emit` writes the event and one pending delivery per subscribed endpoint with the change that
caused it, so an event exists exactly when its change was committed; the dispatcher
(app.webhooks.dispatcher) sends it later. Nothing is written when no endpoint listens.

The lifecycle emails of an event (app.emails.outbox) are queued here too, in the same
transaction: every event has one place where it is emitted.
"""

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, cast, get_args
from uuid import UUID, uuid4

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from sqlalchemy import ColumnElement, Table, exists, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import transaction_cache, utcnow
from app.emails import outbox as emails
from app.referrers.models import Code, Referrer
from app.rewards.models import Reward
from app.rewards.schemas import RewardOut
from app.rewards.states import RewardStatus
from app.tracking.models import Referral
from app.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent

EventType = Literal[
    "referral.created",
    "conversion.attributed",
    "conversion.refunded",
    "reward.created",
    "reward.approved",
    "reward.reversed",
    "reward.paid",
    "reward.fulfilled",
    "reward.fulfilment_failed",
    "referrer.enrolled",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

Payload = BaseModel | Mapping[str, Any] | Callable[[], Awaitable[BaseModel | Mapping[str, Any]]]
_LAST_EMIT = "webhooks.last_emit"
_CACHE = "webhooks.endpoints"


async def emit(
    session: AsyncSession,
    program_id: UUID,
    event_type: EventType,
    payload: Payload,
    *,
    object_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Queue `event_type` about one object for every endpoint of the program that wants it.

    `payload` is the object (a model, a mapping, or an async factory called only when someone
    listens); `object_id` defaults to its `id`; `extra` adds fields next to the object's own.
    """
    endpoint_ids = await _subscribers(session, program_id, event_type)
    if not endpoint_ids:
        return
    resolved = await payload() if callable(payload) else payload
    data = to_jsonable_python(
        resolved.model_dump(mode="json") if isinstance(resolved, BaseModel) else dict(resolved)
    )
    if extra:
        data.update(to_jsonable_python(dict(extra)))
    await _queue(
        session, [(endpoint_ids, program_id, event_type, data, object_id or str(data["id"]))]
    )


async def emit_rewards(
    session: AsyncSession, event_type: EventType, rewards: Iterable[Reward]
) -> None:
    """One event per reward; a reward created already approved also gets `reward.approved`.

    Its email is the earned one alone: it says the reward is confirmed.
    """
    rewards = list(rewards)
    await emails.queue_reward_emails(session, event_type, rewards)
    events: list[_Event] = []
    for reward in rewards:
        types = [event_type]
        if event_type == "reward.created" and reward.status == RewardStatus.APPROVED:
            types.append("reward.approved")
        data: dict[str, Any] | None = None
        for type_ in types:
            endpoint_ids = await _subscribers(session, reward.program_id, type_)
            if not endpoint_ids:
                continue
            if data is None:
                data = to_jsonable_python(RewardOut.model_validate(reward).model_dump(mode="json"))
            events.append((endpoint_ids, reward.program_id, type_, data, str(reward.id)))
    # Every reward's events in one INSERT, and their deliveries in another.
    await _queue(session, events)


async def emit_reward_fulfilled(session: AsyncSession, reward: Reward, out: RewardOut) -> None:
    """A reward its provider issued: `reward.paid` and `reward.fulfilled` (the reward with its
    `fulfilment`), and the email that hands the recipient the code or reference."""
    brief = out.fulfilment
    assert brief is not None
    await emails.queue_reward_emails(
        session,
        "reward.fulfilled",
        [reward],
        fulfilment={
            "method": brief.method.value,
            "provider": brief.provider.value,
            "code": brief.code,
            "reference": brief.reference,
        },
    )
    await emit(session, reward.program_id, "reward.paid", out)
    await emit(session, reward.program_id, "reward.fulfilled", out)


async def emit_reward_ids(
    session: AsyncSession, event_type: EventType, reward_ids: Sequence[UUID]
) -> None:
    """Like emit_rewards, for rows changed by a bulk UPDATE (read afresh, if anyone listens)."""
    if not reward_ids:
        return
    if not emails.emails_on(session) and not await _any_endpoint(session):
        return
    rewards = await session.scalars(
        select(Reward)
        .where(Reward.id.in_(reward_ids))
        .order_by(Reward.created_at, Reward.id)
        .execution_options(populate_existing=True)
    )
    await emit_rewards(session, event_type, rewards)


async def emit_referral_created(session: AsyncSession, referral_id: UUID) -> None:
    """`referral.created` for a referral just made by a redemption or a first purchase."""
    if not emails.emails_on(session) and not await _any_endpoint(session):
        return
    row = (
        await session.execute(
            select(Referral, Code.code)
            .join(Code, Code.id == Referral.code_id)
            .where(Referral.id == referral_id)
        )
    ).one()
    referral, code = row
    await emails.queue_referral_redeemed(session, referral, code)
    await emit(
        session,
        referral.program_id,
        "referral.created",
        {
            "id": referral.id,
            "program_id": referral.program_id,
            "referrer_id": referral.referrer_id,
            "code": code,
            "customer_id": referral.customer_id,
            "click_id": referral.click_id,
            "source": referral.source,
            "occurred_at": referral.occurred_at,
            "created_at": referral.created_at,
        },
    )


def any_endpoint_column() -> ColumnElement[bool]:
    """Whether any endpoint is enabled, as a column for a statement the caller sends anyway;
    `knows_endpoints` keeps its answer for the transaction."""
    return exists().where(WebhookEndpoint.enabled.is_(True)).label("any_endpoint")


def knows_endpoints(session: AsyncSession, any_endpoint: bool) -> None:
    """The transaction read `any_endpoint_column`: when no endpoint is enabled, every event of
    the transaction is left without asking the database again (nobody listens)."""
    transaction_cache(session, _CACHE)["any"] = bool(any_endpoint)


async def _any_endpoint(session: AsyncSession) -> bool:
    cache = transaction_cache(session, _CACHE)
    if "any" not in cache:
        found = await session.scalar(
            select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True)).limit(1)
        )
        cache["any"] = found is not None
    return bool(cache["any"])


async def _subscribers(session: AsyncSession, program_id: UUID, event_type: str) -> list[UUID]:
    cache = transaction_cache(session, _CACHE)
    if cache.get("any") is False:
        return []
    if program_id not in cache:
        rows = await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
                WebhookEndpoint.enabled.is_(True),
                or_(
                    WebhookEndpoint.program_id == program_id,
                    WebhookEndpoint.program_id.is_(None),
                ),
            )
        )
        cache[program_id] = [(endpoint_id, list(types or [])) for endpoint_id, types in rows]
    return [endpoint_id for endpoint_id, types in cache[program_id] if event_type in types]


async def emit_referrer_enrolled(
    session: AsyncSession, referrer: Referrer, code: Code, payload: Callable[[], Mapping[str, Any]]
) -> None:
    """A referrer just joined a program (through the API, or as a buyer auto-enrolled by a
    purchase), with `code` as their default code: their welcome email and `referrer.enrolled`.
    `payload` (the referrer with its `share`) is built only when an endpoint listens."""
    await emails.queue_enrolled(session, referrer, code)

    async def data() -> Mapping[str, Any]:
        return payload()

    await emit(session, referrer.program_id, "referrer.enrolled", data, object_id=str(referrer.id))


def _event_time(session: AsyncSession) -> datetime:
    """Now, but strictly after the session's previous event: their order is kept on ties."""
    now = utcnow()
    last = session.info.get(_LAST_EMIT)
    if last is not None and now <= last:
        now = last + timedelta(microseconds=1)
    session.info[_LAST_EMIT] = now
    return now


# An event to queue: its endpoints, program, type, data and object id.
_Event = tuple[list[UUID], UUID, str, dict[str, Any], str]


async def _queue(session: AsyncSession, events: Sequence[_Event]) -> None:
    """The events, in order, with one pending delivery per endpoint: two statements."""
    if not events:
        return
    rows: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    for endpoint_ids, program_id, event_type, data, object_id in events:
        now = _event_time(session)
        event_id = uuid4()
        body = {
            "type": event_type,
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": data,
        }
        rows.append(
            {
                "id": event_id,
                "created_at": now,
                "program_id": program_id,
                "event_type": event_type,
                "object_id": object_id,
                "payload": body,
            }
        )
        deliveries += [
            {
                "id": uuid4(),
                "created_at": now,
                "event_id": event_id,
                "endpoint_id": endpoint_id,
                "object_id": object_id,
                "ordered_at": now,
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
            }
            for endpoint_id in endpoint_ids
        ]
    for model, values in ((WebhookEvent, rows), (WebhookDelivery, deliveries)):
        # RETURNING makes it one multi-row INSERT (insertmanyvalues), not a row at a time.
        table = cast(Table, model.__table__)
        await session.execute(insert(table).returning(table.c.id), values)
