"""Webhook endpoints (registered by secret and admin keys), their deliveries, redelivery."""

from collections import defaultdict
from uuid import UUID, uuid4

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, get_visible, scoped, sees_every_program
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import AppError, Forbidden, Unprocessable
from app.core.pagination import PageParams, paginate
from app.programs.service import get_program
from app.webhooks.dispatcher import message_id, new_secret
from app.webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
)
from app.webhooks.targets import UnsafeTarget, check_target

MAX_ATTEMPTS_SHOWN = 20


class EndpointNotFound(AppError):
    status, code, title = 404, "webhook_endpoint_not_found", "Webhook endpoint not found"


class DeliveryNotFound(AppError):
    status, code, title = 404, "webhook_delivery_not_found", "Webhook delivery not found"


class InvalidWebhookUrl(AppError):
    status, code, title = 422, "invalid_webhook_url", "The URL may not receive webhooks"


async def _checked_url(url: str, settings: Settings) -> str:
    try:
        await check_target(url, settings)
    except UnsafeTarget as exc:
        raise InvalidWebhookUrl(str(exc)) from exc
    return url


async def create_endpoint(
    session: AsyncSession, principal: Principal, settings: Settings, data: EndpointCreate
) -> EndpointCreated:
    """Register a URL for some event types; the signing secret is returned this once."""
    if data.program_id is None:
        if not sees_every_program(principal):
            raise Forbidden("A key limited to programs must name the program_id of the endpoint.")
    else:
        await get_program(session, principal, data.program_id)
    url = await _checked_url(str(data.url), settings)
    now = utcnow()
    endpoint = WebhookEndpoint(
        created_at=now,
        updated_at=now,
        program_id=data.program_id,
        url=url,
        description=data.description,
        event_types=list(data.event_types),
        secret=new_secret(),
        enabled=data.enabled,
    )
    session.add(endpoint)
    await session.flush()
    out = EndpointOut.model_validate(endpoint)
    return EndpointCreated(**out.model_dump(), secret=endpoint.secret)


async def get_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: UUID, *, for_update: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if for_update:
        query = query.with_for_update()
    return await get_visible(
        session, query, principal, EndpointNotFound, WebhookEndpoint.program_id
    )


async def list_endpoints(
    session: AsyncSession, principal: Principal, params: PageParams
) -> tuple[list[WebhookEndpoint], str | None]:
    query = scoped(select(WebhookEndpoint), principal, WebhookEndpoint.program_id)
    return await paginate(session, query, WebhookEndpoint, params)


async def update_endpoint(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    endpoint_id: UUID,
    data: EndpointUpdate,
) -> WebhookEndpoint:
    """Change the URL, event types, description or enabled flag; pending deliveries follow."""
    endpoint = await get_endpoint(session, principal, endpoint_id, for_update=True)
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field != "description":
            raise Unprocessable(f"{field} cannot be null")
    if data.url is not None:
        endpoint.url = await _checked_url(str(data.url), settings)
    if data.event_types is not None:
        endpoint.event_types = list(data.event_types)
    if "description" in changes:
        endpoint.description = data.description
    if data.enabled is not None:
        endpoint.enabled = data.enabled
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, principal: Principal, endpoint_id: UUID) -> None:
    """Delete the endpoint with its deliveries and their attempts (nothing more is sent)."""
    endpoint = await get_endpoint(session, principal, endpoint_id, for_update=True)
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    await session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.redelivery_of.is_not(None)
        )
    )
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    await session.delete(endpoint)
    await session.flush()


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: UUID,
    params: PageParams,
    status: str | None = None,
) -> tuple[list[DeliveryOut], str | None]:
    """The endpoint's deliveries, oldest first, each with its latest attempts."""
    endpoint = await get_endpoint(session, principal, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    rows, next_cursor = await paginate(session, query, WebhookDelivery, params)
    return await _deliveries_out(session, rows), next_cursor


async def _deliveries_out(session: AsyncSession, rows: list[WebhookDelivery]) -> list[DeliveryOut]:
    if not rows:
        return []
    ids = [row.id for row in rows]
    events = {
        event.id: event
        for event in await session.scalars(
            select(WebhookEvent).where(WebhookEvent.id.in_({row.event_id for row in rows}))
        )
    }
    attempts: dict[UUID, list[WebhookAttempt]] = defaultdict(list)
    for attempt in await session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(ids))
        .order_by(WebhookAttempt.created_at, WebhookAttempt.id)
    ):
        attempts[attempt.delivery_id].append(attempt)
    return [
        DeliveryOut(
            id=row.id,
            endpoint_id=row.endpoint_id,
            event_id=row.event_id,
            webhook_id=message_id(row.event_id),
            event_type=events[row.event_id].event_type,
            object_id=row.object_id,
            status=row.status,
            attempt_count=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
            last_attempt_at=row.last_attempt_at,
            response_status=row.response_status,
            response_excerpt=row.response_excerpt,
            error=row.error,
            delivered_at=row.delivered_at,
            redelivery_of=row.redelivery_of,
            created_at=row.created_at,
            payload=events[row.event_id].payload,
            attempts=[AttemptOut.model_validate(a) for a in attempts[row.id][-MAX_ATTEMPTS_SHOWN:]],
        )
        for row in rows
    ]


async def redeliver(session: AsyncSession, principal: Principal, delivery_id: UUID) -> DeliveryOut:
    """Send the event again now, with the same webhook-id.

    A pending delivery skips the rest of its backoff (the endpoint is fixed: retry now). A
    delivered or failed one is queued as a new delivery, with a fresh retry window, after the
    object's events already queued and before later ones.
    """
    query = (
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
    )
    original = await get_visible(
        session, query, principal, DeliveryNotFound, WebhookEndpoint.program_id
    )
    now = utcnow()
    if original.status == DeliveryStatus.PENDING:
        original.next_attempt_at = min(original.next_attempt_at, now)
        await session.flush()
        return (await _deliveries_out(session, [original]))[0]
    again = WebhookDelivery(
        id=uuid4(),
        created_at=now,
        event_id=original.event_id,
        endpoint_id=original.endpoint_id,
        object_id=original.object_id,
        ordered_at=now,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        redelivery_of=original.id,
    )
    session.add(again)
    await session.flush()
    return (await _deliveries_out(session, [again]))[0]
