from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response

from app.auth import SecretKey
from app.conversions import service
from app.conversions.schemas import (
    Attribution,
    ConversionCreate,
    ConversionOut,
    RefundCreate,
    RefundOut,
)
from app.db import SessionDep
from app.errors import Forbidden, Unauthorized, problem_responses
from app.pagination import Page, PageDep
from app.programs.service import ProgramNotFound

router = APIRouter(
    prefix="/v1/conversions",
    tags=["conversions"],
    responses=problem_responses(Unauthorized, Forbidden),
)


@router.post(
    "",
    status_code=201,
    response_model=ConversionOut,
    responses={200: {"model": ConversionOut, "description": "A retry: the first result"}}
    | problem_responses(
        ProgramNotFound,
        service.EventConflict,
        service.CurrencyMismatch,
        service.InvalidAmount,
        service.OccurredInFuture,
    ),
)
async def record_conversion(
    body: ConversionCreate, response: Response, session: SessionDep, principal: SecretKey
) -> ConversionOut:
    conversion, created = await service.record_conversion(session, principal, body)
    response.status_code = 201 if created else 200
    return conversion


@router.get("", response_model=Page[ConversionOut])
async def list_conversions(
    session: SessionDep,
    principal: SecretKey,
    page: PageDep,
    program_id: UUID | None = None,
    referrer_id: UUID | None = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Literal["attributed", "unattributed"] | None = None,
    occurred_from: Annotated[datetime | None, Query(alias="from")] = None,
    occurred_to: Annotated[datetime | None, Query(alias="to")] = None,
) -> Page[ConversionOut]:
    filters = service.ConversionFilters(
        program_id=program_id,
        referrer_id=referrer_id,
        customer_id=customer_id,
        status=status,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
    )
    rows, next_cursor = await service.list_conversions(session, principal, filters, page)
    return Page(data=rows, next_cursor=next_cursor)


@router.get(
    "/{conversion_id}",
    response_model=ConversionOut,
    responses=problem_responses(service.ConversionNotFound),
)
async def get_conversion(
    conversion_id: UUID, session: SessionDep, principal: SecretKey
) -> ConversionOut:
    return await service.read_conversion(session, principal, conversion_id)


@router.get(
    "/{conversion_id}/attribution",
    response_model=Attribution,
    responses=problem_responses(service.ConversionNotFound),
)
async def explain_attribution(
    conversion_id: UUID, session: SessionDep, principal: SecretKey
) -> Attribution:
    return await service.explain_attribution(session, principal, conversion_id)


@router.post(
    "/{conversion_id}/refunds",
    status_code=201,
    response_model=RefundOut,
    responses={200: {"model": RefundOut, "description": "A retry of the same refund_id"}}
    | problem_responses(
        service.ConversionNotFound,
        service.RefundConflict,
        service.AlreadyRefunded,
        service.RefundTooLarge,
        service.InvalidAmount,
    ),
)
async def refund(
    conversion_id: UUID,
    body: RefundCreate,
    response: Response,
    session: SessionDep,
    principal: SecretKey,
) -> RefundOut:
    refund_out, created = await service.refund(session, principal, conversion_id, body)
    response.status_code = 201 if created else 200
    return refund_out
