from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request

from app.core.errors import problem_responses
from app.customers import service
from app.customers.schemas import ErasureOut
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import SessionDep

router = APIRouter(tags=["customers"], responses=problem_responses(*AUTHENTICATED_ERRORS))


@router.delete("/v1/customers/{customer_id}", response_model=ErasureOut)
async def erase_customer(
    customer_id: Annotated[str, Path(min_length=1, max_length=200)],
    request: Request,
    session: SessionDep,
    principal: SecretKey,
    program_id: UUID | None = None,
) -> ErasureOut:
    """GDPR erasure: the customer's id becomes a keyed pseudonym and their personal fields go,
    in every row and every stored copy (answers, webhook payloads, platform events); metrics
    stay exact."""
    return await service.erase_customer(
        session, request.app.state.settings, principal, customer_id, program_id
    )
