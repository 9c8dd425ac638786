from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal
from app.core.errors import PATCH_ERRORS, POST_ERRORS, ValidationFailed, problem_responses
from app.core.pagination import InvalidCursor, InvalidLimit, Page, PageParams
from app.core.schemas import AwareDatetime
from app.fulfilment.jobs import RULE_ERRORS
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
from app.referrers.service import ReferrerNotFound, get_referrer
from app.rewards import rules, service
from app.rewards.schemas import (
    Balance,
    MarkPaid,
    Reverse,
    RewardOut,
    RewardStatus,
    RuleCreate,
    RuleOut,
    RuleUpdate,
)
from app.rewards.states import InvalidTransition

router = APIRouter(tags=["rewards"], responses=problem_responses(*AUTHENTICATED_ERRORS))


@router.post(
    "/v1/programs/{program_id}/reward-rules",
    status_code=201,
    response_model=RuleOut,
    responses=problem_responses(
        ProgramNotFound, rules.InvalidRule, rules.TooManyRules, *RULE_ERRORS, *POST_ERRORS
    ),
)
async def create_rule(
    program_id: UUID, body: RuleCreate, session: SessionDep, principal: SecretKey
) -> RuleOut:
    return await rules.create_rule(session, principal, program_id, body)


@router.get(
    "/v1/programs/{program_id}/reward-rules",
    response_model=list[RuleOut],
    responses=problem_responses(ProgramNotFound),
)
async def list_rules(program_id: UUID, session: SessionDep, principal: SecretKey) -> list[RuleOut]:
    return await rules.list_rules(session, principal, program_id)


@router.get(
    "/v1/reward-rules/{rule_id}",
    response_model=RuleOut,
    responses=problem_responses(rules.RuleNotFound),
)
async def get_rule(rule_id: UUID, session: SessionDep, principal: SecretKey) -> RuleOut:
    return RuleOut.model_validate(await rules.get_rule(session, principal, rule_id))


@router.patch(
    "/v1/reward-rules/{rule_id}",
    response_model=RuleOut,
    responses=problem_responses(rules.RuleNotFound, rules.InvalidRule, *RULE_ERRORS, *PATCH_ERRORS),
)
async def update_rule(
    rule_id: UUID, body: RuleUpdate, session: SessionDep, principal: SecretKey
) -> RuleOut:
    return await rules.update_rule(session, principal, rule_id, body)


REWARD_CSV_COLUMNS = tuple(RewardOut.model_fields)


@router.get(
    "/v1/rewards",
    response_model=Page[RewardOut],
    responses=CSV_RESPONSE | problem_responses(ValidationFailed, InvalidCursor, InvalidLimit),
)
async def list_rewards(
    request: Request,
    session: SessionDep,
    principal: SecretKey,
    page: PageDep,
    program_id: UUID | None = None,
    referrer_id: UUID | None = None,
    conversion_id: UUID | None = None,
    status: RewardStatus | None = None,
    created_from: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    created_to: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    format_: Annotated[Format, FORMAT_QUERY] = "json",
) -> Page[RewardOut] | Response:
    """Ledger entries, oldest first; `?format=csv` streams every matching row (from `cursor` on)."""
    filters = service.RewardFilters(
        program_id=program_id,
        referrer_id=referrer_id,
        conversion_id=conversion_id,
        status=status,
        created_from=created_from,
        created_to=created_to,
    )
    if format_ == "csv":
        check_cursor(page.cursor)
        return _rewards_csv(request, principal, filters, page.cursor)
    rows, next_cursor = await service.list_rewards(session, principal, filters, page)
    return Page(data=rows, next_cursor=next_cursor)


def _rewards_csv(
    request: Request, principal: Principal, filters: service.RewardFilters, cursor: str | None
) -> StreamingResponse:
    async def fetch(
        session: AsyncSession, params: PageParams
    ) -> tuple[list[RewardOut], str | None]:
        return await service.list_rewards(session, principal, filters, params)

    return paged_csv(request, "rewards.csv", REWARD_CSV_COLUMNS, fetch, cursor)


TRANSITION_ERRORS = problem_responses(
    service.RewardNotFound, InvalidTransition, service.RewardInBatch, *POST_ERRORS
)


@router.post(
    "/v1/rewards/{reward_id}/approve", response_model=RewardOut, responses=TRANSITION_ERRORS
)
async def approve(reward_id: UUID, session: SessionDep, principal: SecretKey) -> RewardOut:
    return await service.approve(session, principal, reward_id)


@router.post(
    "/v1/rewards/{reward_id}/mark-paid", response_model=RewardOut, responses=TRANSITION_ERRORS
)
async def mark_paid(
    reward_id: UUID, session: SessionDep, principal: SecretKey, body: MarkPaid | None = None
) -> RewardOut:
    reference = body.payout_reference if body else None
    return await service.mark_paid(session, principal, reward_id, reference)


@router.post(
    "/v1/rewards/{reward_id}/reverse", response_model=RewardOut, responses=TRANSITION_ERRORS
)
async def reverse(
    reward_id: UUID, body: Reverse, session: SessionDep, principal: SecretKey
) -> RewardOut:
    return await service.reverse(session, principal, reward_id, body.reason)


@router.get(
    "/v1/referrers/{referrer_id}/balance",
    response_model=Balance,
    responses=problem_responses(ReferrerNotFound),
)
async def referrer_balance(referrer_id: UUID, session: SessionDep, principal: SecretKey) -> Balance:
    referrer, _ = await get_referrer(session, principal, referrer_id)
    return await service.balance(session, referrer)
