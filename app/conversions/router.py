from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions import service
from app.conversions.models import ConversionStatus
from app.conversions.schemas import (
    Attribution,
    ConversionCreate,
    ConversionOut,
    RefundCreate,
    RefundOut,
)
from app.core.access import Principal
from app.core.errors import POST_ERRORS, ValidationFailed, problem_responses
from app.core.pagination import InvalidCursor, InvalidLimit, Page, PageParams
from app.core.schemas import AwareDatetime
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.http.exports import (
    CSV_RESPONSE,
    FORMAT_QUERY,
    Format,
    check_cursor,
    paged_csv,
)
from app.programs.service import ProgramNotFound

router = APIRouter(
    prefix="/v1/conversions",
    tags=["conversions"],
    responses=problem_responses(*AUTHENTICATED_ERRORS),
)


@router.post(
    "",
    status_code=201,
    response_model=ConversionOut,
    responses=problem_responses(
        ProgramNotFound,
        service.EventConflict,
        service.CurrencyMismatch,
        service.InvalidAmount,
        service.OccurredInFuture,
        *POST_ERRORS,
    )
    | {200: {"model": ConversionOut, "description": "A retry: the first result"}},
)
async def record_conversion(
    body: ConversionCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: SecretKey,
) -> ConversionOut:
    settings = request.app.state.settings
    conversion, created = await service.record_conversion(session, principal, body, settings)
    response.status_code = 201 if created else 200
    return conversion


# Every field but the rewards (GET /v1/rewards?format=csv exports those) and the buyer's share
# (only in the answer to POST); metadata as JSON.
CSV_COLUMNS = tuple(name for name in ConversionOut.model_fields if name not in ("rewards", "share"))


@router.get(
    "",
    response_model=Page[ConversionOut],
    responses=CSV_RESPONSE | problem_responses(ValidationFailed, InvalidCursor, InvalidLimit),
)
async def list_conversions(
    request: Request,
    session: SessionDep,
    principal: SecretKey,
    page: PageDep,
    program_id: UUID | None = None,
    referrer_id: UUID | None = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    status: ConversionStatus | None = None,
    occurred_from: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    occurred_to: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    format_: Annotated[Format, FORMAT_QUERY] = "json",
) -> Page[ConversionOut] | Response:
    """Conversions, oldest first; `?format=csv` streams every matching row (from `cursor` on)."""
    filters = service.ConversionFilters(
        program_id=program_id,
        referrer_id=referrer_id,
        customer_id=customer_id,
        status=status,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
    )
    if format_ == "csv":
        check_cursor(page.cursor)
        return _conversions_csv(request, principal, filters, page.cursor)
    rows, next_cursor = await service.list_conversions(session, principal, filters, page)
    return Page(data=rows, next_cursor=next_cursor)


def _conversions_csv(
    request: Request,
    principal: Principal,
    filters: service.ConversionFilters,
    cursor: str | None,
) -> StreamingResponse:
    async def fetch(
        session: AsyncSession, params: PageParams
    ) -> tuple[list[ConversionOut], str | None]:
        return await service.list_conversions(session, principal, filters, params)

    return paged_csv(request, "conversions.csv", CSV_COLUMNS, fetch, cursor)


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
    responses=problem_responses(
        service.ConversionNotFound,
        service.RefundConflict,
        service.AlreadyRefunded,
        service.RefundTooLarge,
        service.InvalidAmount,
        *POST_ERRORS,
    )
    | {200: {"model": RefundOut, "description": "A retry of the same refund_id"}},
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
