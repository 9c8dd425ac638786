"""/v1/me…: what a referrer session may call, and nothing an API key may (403)."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from app.core.errors import PATCH_ERRORS, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.http.auth import REFERRER_SESSION_ERRORS
from app.http.cors import MeSession, OriginNotAllowed
from app.http.dependencies import PageDep, SessionDep
from app.me import service, standing
from app.me.schemas import Leaderboard, MeOut, MeReferral, MeReward, MeUpdate, Progress
from app.payouts.details import SETTINGS_ERRORS
from app.referrer_sessions.service import end_own_session
from app.rewards.schemas import Balance
from app.rewards.service import RewardNotFound

router = APIRouter(
    prefix="/v1/me",
    tags=["me (referrer sessions)"],
    responses=problem_responses(*REFERRER_SESSION_ERRORS, OriginNotAllowed),
)


@router.get("", response_model=MeOut)
async def read_me(request: Request, session: SessionDep, principal: MeSession) -> MeOut:
    """The referrer, their codes and links, share texts per channel, the friend's offer."""
    return await service.read_me(session, principal, request.app.state.settings)


@router.patch(
    "", response_model=MeOut, responses=problem_responses(*SETTINGS_ERRORS, *PATCH_ERRORS)
)
async def update_me(
    body: MeUpdate, request: Request, session: SessionDep, principal: MeSession
) -> MeOut:
    """Set (or clear, with null) the name shown on the leaderboard, where cash rewards are paid
    (`payout_method` with `payout_recipient`, answered masked) and the charity donation rewards
    go to (`charity_id`, one of `charities`)."""
    return await service.update_me(session, principal, request.app.state.settings, body)


@router.delete("/session", status_code=204, response_class=Response)
async def sign_out(request: Request, session: SessionDep, principal: MeSession) -> Response:
    """End this session: its token answers 401 `session_revoked` from now on."""
    await end_own_session(session, principal)
    if (cache := request.app.state.session_cache) is not None:
        cache.clear()
    return Response(status_code=204)


@router.get(
    "/referrals",
    response_model=Page[MeReferral],
    responses=problem_responses(*PAGE_ERRORS),
)
async def list_referrals(
    session: SessionDep, principal: MeSession, page: PageDep
) -> Page[MeReferral]:
    """Referred friends (masked), oldest first, each redeemed → purchased → rewarded, refunded,
    or not counted and why."""
    rows, next_cursor = await service.list_referrals(session, principal, page)
    return Page(data=rows, next_cursor=next_cursor)


@router.get(
    "/referrals/{referral_id}",
    response_model=MeReferral,
    responses=problem_responses(service.ReferralNotFound),
)
async def read_referral(referral_id: UUID, session: SessionDep, principal: MeSession) -> MeReferral:
    return await service.read_referral(session, principal, referral_id)


@router.get("/rewards", response_model=Page[MeReward], responses=problem_responses(*PAGE_ERRORS))
async def list_rewards(session: SessionDep, principal: MeSession, page: PageDep) -> Page[MeReward]:
    """The referrer's rewards, oldest first: amount, status, why, and when a pending one
    will be approved."""
    rows, next_cursor = await service.list_rewards(session, principal, page)
    return Page(data=rows, next_cursor=next_cursor)


@router.get(
    "/rewards/{reward_id}", response_model=MeReward, responses=problem_responses(RewardNotFound)
)
async def read_reward(reward_id: UUID, session: SessionDep, principal: MeSession) -> MeReward:
    return await service.read_reward(session, principal, reward_id)


@router.get("/balance", response_model=Balance)
async def read_balance(session: SessionDep, principal: MeSession) -> Balance:
    """Pending, approved, paid, owed and payable, per currency (or points)."""
    return await service.read_balance(session, principal)


@router.get("/progress", response_model=Progress)
async def read_progress(session: SessionDep, principal: MeSession) -> Progress:
    """Progress toward the next tier of each active referrer rule with tiers."""
    return await standing.progress(session, principal)


@router.get("/leaderboard", response_model=Leaderboard)
async def read_leaderboard(
    session: SessionDep,
    principal: MeSession,
    limit: Annotated[
        int, Query(ge=1, le=standing.MAX_LEADERBOARD_SIZE, description="How many to list")
    ] = standing.DEFAULT_LEADERBOARD_SIZE,
) -> Leaderboard:
    """The referrer's rank and the program's top `limit`, by successful referrals; others
    appear by the name they chose, or anonymised."""
    return await standing.leaderboard(session, principal, limit)
