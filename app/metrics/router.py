from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.errors import ValidationFailed, problem_responses
from app.core.pagination import InvalidLimit
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import SessionDep
from app.http.exports import CSV_RESPONSE, FORMAT_QUERY, Format, table_response
from app.metrics import csv, service
from app.metrics.periods import (
    COHORT_DEFAULT_DAYS,
    COHORT_MAX_DAYS,
    DEFAULT_DAYS,
    MAX_DAYS,
    Interval,
    InvalidRange,
    InvalidTimeZone,
    Window,
    make_window,
)
from app.metrics.schemas import (
    Channels,
    Cohorts,
    Leaderboard,
    ReferrerMetrics,
    ReferrerOrder,
    Summary,
    Timeseries,
)
from app.programs.service import ProgramNotFound
from app.referrers.service import ReferrerNotFound

MAX_LIMIT = 500
DEFAULT_LIMIT = 50

router = APIRouter(tags=["metrics"], responses=problem_responses(*AUTHENTICATED_ERRORS))

FromQuery = Annotated[
    datetime | None,
    Query(alias="from", description="Range start, ISO 8601 with a zone (inclusive)"),
]
ToQuery = Annotated[
    datetime | None,
    Query(alias="to", description="Range end, ISO 8601 with a zone (exclusive); default now"),
]
TzQuery = Annotated[
    str, Query(max_length=64, description="IANA time zone of the buckets, e.g. Europe/Paris")
]


def metrics_window(range_from: FromQuery = None, range_to: ToQuery = None) -> Window:
    """`[from, to)`: at most 400 days; by default the 30 days before `to` (default now)."""
    return make_window(
        range_from, range_to, now=utcnow(), default_days=DEFAULT_DAYS, max_days=MAX_DAYS
    )


def cohort_window(range_from: FromQuery = None, range_to: ToQuery = None) -> Window:
    """`[from, to)`: at most 1100 days; by default the 365 days before `to` (default now)."""
    return make_window(
        range_from,
        range_to,
        now=utcnow(),
        default_days=COHORT_DEFAULT_DAYS,
        max_days=COHORT_MAX_DAYS,
    )


def row_limit(
    limit: Annotated[int, Query(ge=1, description=f"Rows, at most {MAX_LIMIT}")] = DEFAULT_LIMIT,
) -> int:
    if limit > MAX_LIMIT:
        raise InvalidLimit(f"limit may be at most {MAX_LIMIT}")
    return limit


async def read_session(request: Request, session: SessionDep) -> AsyncIterator[AsyncSession]:
    """Where the metrics are counted: the read replica (REFERRAL_DATABASE_READ_URL) when set.

    A replica's answers lag the primary by its replication delay; without one, the request's
    own session (one transaction with the access checks).
    """
    replicas = request.app.state.read_sessionmaker
    if replicas is None:
        yield session
        return
    async with replicas() as replica:
        yield replica


WindowDep = Annotated[Window, Depends(metrics_window)]
ReaderDep = Annotated[AsyncSession, Depends(read_session)]
LimitDep = Annotated[int, Depends(row_limit)]
FormatQuery = Annotated[Format, FORMAT_QUERY]
RANGE_ERRORS = (ProgramNotFound, ValidationFailed, InvalidRange)


@router.get(
    "/v1/programs/{program_id}/metrics/summary",
    response_model=Summary,
    responses=CSV_RESPONSE | problem_responses(*RANGE_ERRORS),
)
async def summary(
    program_id: UUID,
    window: WindowDep,
    session: SessionDep,
    reader: ReaderDep,
    principal: SecretKey,
    format_: FormatQuery = "json",
) -> Summary | Response:
    """The program's funnel over `[from, to)`; definitions in the README."""
    result = await service.summary(session, principal, program_id, window, reader)
    return table_response(csv.summary_csv(result)) if format_ == "csv" else result


@router.get(
    "/v1/programs/{program_id}/metrics/timeseries",
    response_model=Timeseries,
    responses=CSV_RESPONSE | problem_responses(*RANGE_ERRORS, InvalidTimeZone),
)
async def timeseries(
    program_id: UUID,
    window: WindowDep,
    session: SessionDep,
    reader: ReaderDep,
    principal: SecretKey,
    interval: Interval = "day",
    tz: TzQuery = "UTC",
    format_: FormatQuery = "json",
) -> Timeseries | Response:
    """The funnel per day, ISO week or month in the zone `tz`; empty buckets included."""
    result = await service.timeseries(session, principal, program_id, window, interval, tz, reader)
    return table_response(csv.timeseries_csv(result)) if format_ == "csv" else result


@router.get(
    "/v1/programs/{program_id}/metrics/referrers",
    response_model=Leaderboard,
    responses=CSV_RESPONSE | problem_responses(*RANGE_ERRORS, InvalidLimit),
)
async def referrers(
    program_id: UUID,
    window: WindowDep,
    limit: LimitDep,
    session: SessionDep,
    reader: ReaderDep,
    principal: SecretKey,
    order_by: ReferrerOrder = "conversions",
    format_: FormatQuery = "json",
) -> Leaderboard | Response:
    """The leaderboard: referrers active in the range with their funnel, best first."""
    result = await service.referrers(
        session, principal, program_id, window, order_by, limit, reader
    )
    return table_response(csv.referrers_csv(result)) if format_ == "csv" else result


@router.get(
    "/v1/programs/{program_id}/metrics/channels",
    response_model=Channels,
    responses=CSV_RESPONSE | problem_responses(*RANGE_ERRORS, InvalidLimit),
)
async def channels(
    program_id: UUID,
    window: WindowDep,
    limit: LimitDep,
    session: SessionDep,
    reader: ReaderDep,
    principal: SecretKey,
    format_: FormatQuery = "json",
) -> Channels | Response:
    """The funnel by utm source / medium / campaign ("direct" for none), most clicks first."""
    result = await service.channels(session, principal, program_id, window, limit, reader)
    return table_response(csv.channels_csv(result)) if format_ == "csv" else result


@router.get(
    "/v1/programs/{program_id}/metrics/cohorts",
    response_model=Cohorts,
    responses=CSV_RESPONSE | problem_responses(*RANGE_ERRORS, InvalidTimeZone),
)
async def cohorts(
    program_id: UUID,
    window: Annotated[Window, Depends(cohort_window)],
    session: SessionDep,
    reader: ReaderDep,
    principal: SecretKey,
    by: Literal["month"] = "month",
    tz: TzQuery = "UTC",
    format_: FormatQuery = "json",
) -> Cohorts | Response:
    """Referred and unattributed customers by month, with purchases in the months after."""
    result = await service.cohorts(session, principal, program_id, window, tz, reader)
    return table_response(csv.cohorts_csv(result)) if format_ == "csv" else result


@router.get(
    "/v1/referrers/{referrer_id}/metrics",
    response_model=ReferrerMetrics,
    responses=problem_responses(ReferrerNotFound, ValidationFailed, InvalidRange),
)
async def referrer_metrics(
    referrer_id: UUID,
    window: WindowDep,
    session: SessionDep,
    reader: ReaderDep,
    principal: SecretKey,
) -> ReferrerMetrics:
    """One referrer's funnel and rewards over the range, and their balance now."""
    return await service.referrer_metrics(session, principal, referrer_id, window, reader)
