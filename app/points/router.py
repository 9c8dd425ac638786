from uuid import UUID

from fastapi import APIRouter, Response

from app.core.errors import PATCH_ERRORS, POST_ERRORS, problem_responses
from app.http.auth import AUTHENTICATED_ERRORS, REFERRER_SESSION_ERRORS, SecretKey
from app.http.cors import MeSession, MeSessionPost, OriginNotAllowed
from app.http.dependencies import SessionDep
from app.points import redemptions, service
from app.points.schemas import (
    ItemCreate,
    ItemOut,
    ItemUpdate,
    MyPoints,
    RedemptionCreate,
    RedemptionOut,
)
from app.programs.service import ProgramNotFound
from app.referrers.service import ReferrerNotFound

router = APIRouter(tags=["points catalogue"], responses=problem_responses(*AUTHENTICATED_ERRORS))
me = APIRouter(
    prefix="/v1/me",
    tags=["me (referrer sessions)"],
    responses=problem_responses(*REFERRER_SESSION_ERRORS, OriginNotAllowed),
)


@router.post(
    "/v1/programs/{program_id}/points-items",
    status_code=201,
    response_model=ItemOut,
    responses=problem_responses(
        ProgramNotFound, service.TooManyItems, *service.ITEM_ERRORS, *POST_ERRORS
    ),
)
async def create_item(
    program_id: UUID, body: ItemCreate, session: SessionDep, principal: SecretKey
) -> ItemOut:
    """List an item referrers may spend points on (e.g. 500 points → a $5 coupon)."""
    return await service.create_item(session, principal, program_id, body)


@router.get(
    "/v1/programs/{program_id}/points-items",
    response_model=list[ItemOut],
    responses=problem_responses(ProgramNotFound),
)
async def list_items(program_id: UUID, session: SessionDep, principal: SecretKey) -> list[ItemOut]:
    """The catalogue, cheapest first, withdrawn items included."""
    return await service.list_items(session, principal, program_id)


@router.get(
    "/v1/points-items/{item_id}",
    response_model=ItemOut,
    responses=problem_responses(service.ItemNotFound),
)
async def read_item(item_id: UUID, session: SessionDep, principal: SecretKey) -> ItemOut:
    return await service.read_item(session, principal, item_id)


@router.patch(
    "/v1/points-items/{item_id}",
    response_model=ItemOut,
    responses=problem_responses(service.ItemNotFound, *service.ITEM_ERRORS, *PATCH_ERRORS),
)
async def update_item(
    item_id: UUID, body: ItemUpdate, session: SessionDep, principal: SecretKey
) -> ItemOut:
    """Change the item (`active: false` withdraws it); redemptions made keep what they bought."""
    return await service.update_item(session, principal, item_id, body)


@router.delete(
    "/v1/points-items/{item_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(service.ItemNotFound),
)
async def delete_item(item_id: UUID, session: SessionDep, principal: SecretKey) -> Response:
    """Remove the item; one that was redeemed is withdrawn (inactive) instead."""
    await service.delete_item(session, principal, item_id)
    return Response(status_code=204)


@router.post(
    "/v1/referrers/{referrer_id}/points/redemptions",
    status_code=201,
    response_model=RedemptionOut,
    responses=problem_responses(ReferrerNotFound, *redemptions.REDEEM_ERRORS, *POST_ERRORS),
)
async def redeem(
    referrer_id: UUID, body: RedemptionCreate, session: SessionDep, principal: SecretKey
) -> RedemptionOut:
    """Spend the referrer's points on an item: a negative points entry, and the item's reward,
    fulfilled like any reward (the answer shows its fulfilment; the code once issued).
    409 insufficient_points over the spendable balance."""
    return await redemptions.redeem(session, principal, referrer_id, body)


@me.get("/points", response_model=MyPoints)
async def my_points(session: SessionDep, principal: MeSession) -> MyPoints:
    """Spendable points and the catalogue to spend them on."""
    return await redemptions.my_points(session, principal)


@me.post(
    "/points/redemptions",
    status_code=201,
    response_model=RedemptionOut,
    responses=problem_responses(ReferrerNotFound, *redemptions.REDEEM_ERRORS, *POST_ERRORS),
)
async def redeem_own(
    body: RedemptionCreate, session: SessionDep, principal: MeSessionPost
) -> RedemptionOut:
    """Spend the session's referrer's own points on an item, as the secret-key endpoint does."""
    return await redemptions.redeem(session, principal, principal.referrer_id, body)
