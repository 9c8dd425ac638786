from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Request, Response

from app.core.errors import POST_ERRORS, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.fulfilment import service
from app.fulfilment.schemas import CredentialsCreate, FulfilmentOut, ProviderCreated, ProviderOut
from app.fulfilment.states import FulfilmentStatus, NotRetryable
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.programs.service import ProgramNotFound
from app.rewards.states import FulfilmentProvider

router = APIRouter(tags=["fulfilment"], responses=problem_responses(*AUTHENTICATED_ERRORS))


@router.post(
    "/v1/programs/{program_id}/fulfilment-providers",
    status_code=201,
    response_model=ProviderCreated,
    responses=problem_responses(ProgramNotFound, service.InvalidFulfilmentUrl, *POST_ERRORS),
)
async def add_provider(
    program_id: UUID,
    body: Annotated[CredentialsCreate, Body()],
    request: Request,
    session: SessionDep,
    principal: SecretKey,
) -> ProviderCreated:
    """Give the program a provider's credentials (Shopify, Stripe, or a fulfilment webhook);
    posting the same provider again replaces them. Only a prefix is ever shown again."""
    return await service.add_provider(
        session, principal, request.app.state.settings, program_id, body
    )


@router.get(
    "/v1/programs/{program_id}/fulfilment-providers",
    response_model=list[ProviderOut],
    responses=problem_responses(ProgramNotFound),
)
async def list_providers(
    program_id: UUID, session: SessionDep, principal: SecretKey
) -> list[ProviderOut]:
    return await service.list_providers(session, principal, program_id)


@router.delete(
    "/v1/programs/{program_id}/fulfilment-providers/{provider}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(ProgramNotFound, service.ProviderNotFound, service.ProviderInUse),
)
async def delete_provider(
    program_id: UUID, provider: FulfilmentProvider, session: SessionDep, principal: SecretKey
) -> Response:
    await service.delete_provider(session, principal, program_id, provider)
    return Response(status_code=204)


@router.get(
    "/v1/fulfilments",
    response_model=Page[FulfilmentOut],
    responses=problem_responses(*PAGE_ERRORS),
)
async def list_fulfilments(
    session: SessionDep,
    principal: SecretKey,
    page: PageDep,
    program_id: UUID | None = None,
    status: FulfilmentStatus | None = None,
    reward_id: UUID | None = None,
) -> Page[FulfilmentOut]:
    """Every reward delivered through a provider, oldest first; `?status=failed` lists what
    needs ops (retry it, or pay it by hand with mark-paid)."""
    filters = service.FulfilmentFilters(program_id=program_id, status=status, reward_id=reward_id)
    rows, next_cursor = await service.list_fulfilments(session, principal, filters, page)
    return Page(data=rows, next_cursor=next_cursor)


@router.get(
    "/v1/fulfilments/{fulfilment_id}",
    response_model=FulfilmentOut,
    responses=problem_responses(service.FulfilmentNotFound),
)
async def get_fulfilment(
    fulfilment_id: UUID, session: SessionDep, principal: SecretKey
) -> FulfilmentOut:
    row = await service.get_fulfilment(session, principal, fulfilment_id)
    return service.fulfilment_out(row)


@router.post(
    "/v1/fulfilments/{fulfilment_id}/retry",
    response_model=FulfilmentOut,
    responses=problem_responses(service.FulfilmentNotFound, NotRetryable, *POST_ERRORS),
)
async def retry(fulfilment_id: UUID, session: SessionDep, principal: SecretKey) -> FulfilmentOut:
    """Try a failed (or pending) fulfilment again now, with a fresh retry window."""
    return await service.retry(session, principal, fulfilment_id)
