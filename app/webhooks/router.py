from uuid import UUID

from fastapi import APIRouter, Request, Response

from app.core.errors import PATCH_ERRORS, POST_ERRORS, Unprocessable, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.programs.service import ProgramNotFound
from app.webhooks import service
from app.webhooks.models import DeliveryStatus
from app.webhooks.schemas import (
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
)

router = APIRouter(tags=["webhooks"], responses=problem_responses(*AUTHENTICATED_ERRORS))


@router.post(
    "/v1/webhook-endpoints",
    status_code=201,
    response_model=EndpointCreated,
    responses=problem_responses(ProgramNotFound, service.InvalidWebhookUrl, *POST_ERRORS),
)
async def create_endpoint(
    body: EndpointCreate, request: Request, session: SessionDep, principal: SecretKey
) -> EndpointCreated:
    """Register a URL for event types; the `secret` in the answer is shown only this once."""
    return await service.create_endpoint(session, principal, request.app.state.settings, body)


@router.get(
    "/v1/webhook-endpoints",
    response_model=Page[EndpointOut],
    responses=problem_responses(*PAGE_ERRORS),
)
async def list_endpoints(
    session: SessionDep, principal: SecretKey, page: PageDep
) -> Page[EndpointOut]:
    rows, next_cursor = await service.list_endpoints(session, principal, page)
    return Page(data=[EndpointOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    responses=problem_responses(service.EndpointNotFound),
)
async def get_endpoint(endpoint_id: UUID, session: SessionDep, principal: SecretKey) -> EndpointOut:
    return EndpointOut.model_validate(await service.get_endpoint(session, principal, endpoint_id))


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    responses=problem_responses(
        service.EndpointNotFound, service.InvalidWebhookUrl, Unprocessable, *PATCH_ERRORS
    ),
)
async def update_endpoint(
    endpoint_id: UUID,
    body: EndpointUpdate,
    request: Request,
    session: SessionDep,
    principal: SecretKey,
) -> EndpointOut:
    endpoint = await service.update_endpoint(
        session, principal, request.app.state.settings, endpoint_id, body
    )
    return EndpointOut.model_validate(endpoint)


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(service.EndpointNotFound),
)
async def delete_endpoint(endpoint_id: UUID, session: SessionDep, principal: SecretKey) -> Response:
    await service.delete_endpoint(session, principal, endpoint_id)
    return Response(status_code=204)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=Page[DeliveryOut],
    responses=problem_responses(service.EndpointNotFound, *PAGE_ERRORS),
)
async def list_deliveries(
    endpoint_id: UUID,
    session: SessionDep,
    principal: SecretKey,
    page: PageDep,
    status: DeliveryStatus | None = None,
) -> Page[DeliveryOut]:
    """What was sent to the endpoint, what it answered on each attempt, and what is pending."""
    rows, next_cursor = await service.list_deliveries(session, principal, endpoint_id, page, status)
    return Page(data=rows, next_cursor=next_cursor)


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    responses=problem_responses(service.DeliveryNotFound, *POST_ERRORS),
)
async def redeliver(delivery_id: UUID, session: SessionDep, principal: SecretKey) -> DeliveryOut:
    """Send the event again now (same webhook-id): a pending delivery skips its backoff, a
    delivered or failed one is queued again with a fresh retry window."""
    return await service.redeliver(session, principal, delivery_id)
