from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from app.core.csv import encode_rows
from app.core.errors import PATCH_ERRORS, POST_ERRORS, ValidationFailed, problem_responses
from app.core.pagination import PAGE_ERRORS, Page
from app.http.auth import AUTHENTICATED_ERRORS, SecretKey
from app.http.dependencies import PageDep, SessionDep
from app.http.exports import CSV_RESPONSE, FORMAT_QUERY, Format, csv_response
from app.payouts import batches, details, exports
from app.payouts.schemas import (
    BatchCreate,
    BatchOut,
    BatchPay,
    BatchSummary,
    CharityCreate,
    CharityOut,
    CharityUpdate,
    PayoutSettingsUpdate,
    ReferrerPayoutSettings,
)
from app.payouts.states import BatchKind, BatchNotOpen, BatchStatus
from app.programs.service import ProgramNotFound
from app.referrers.service import ReferrerNotFound
from app.rewards.states import InvalidTransition

router = APIRouter(tags=["payouts"], responses=problem_responses(*AUTHENTICATED_ERRORS))


# --- charities --------------------------------------------------------------------------------


@router.post(
    "/v1/programs/{program_id}/charities",
    status_code=201,
    response_model=CharityOut,
    responses=problem_responses(ProgramNotFound, details.TooManyCharities, *POST_ERRORS),
)
async def create_charity(
    program_id: UUID, body: CharityCreate, session: SessionDep, principal: SecretKey
) -> CharityOut:
    """Add a charity to the program's list: referrers of donation rewards choose one."""
    return await details.create_charity(session, principal, program_id, body)


@router.get(
    "/v1/programs/{program_id}/charities",
    response_model=list[CharityOut],
    responses=problem_responses(ProgramNotFound),
)
async def list_charities(
    program_id: UUID, session: SessionDep, principal: SecretKey
) -> list[CharityOut]:
    return await details.list_charities(session, principal, program_id)


@router.patch(
    "/v1/charities/{charity_id}",
    response_model=CharityOut,
    responses=problem_responses(
        details.CharityNotFound, details.InvalidPayoutDetails, *PATCH_ERRORS
    ),
)
async def update_charity(
    charity_id: UUID, body: CharityUpdate, session: SessionDep, principal: SecretKey
) -> CharityOut:
    """Rename it, or retire it (`active: false`): no new choices, earlier ones stay."""
    return await details.update_charity(session, principal, charity_id, body)


# --- a referrer's payout details --------------------------------------------------------------


@router.get(
    "/v1/referrers/{referrer_id}/payout-settings",
    response_model=ReferrerPayoutSettings,
    responses=problem_responses(ReferrerNotFound),
)
async def read_payout_settings(
    referrer_id: UUID, session: SessionDep, principal: SecretKey
) -> ReferrerPayoutSettings:
    """Where the referrer is paid (masked) and the charity they chose."""
    return await details.referrer_settings(session, principal, referrer_id)


@router.patch(
    "/v1/referrers/{referrer_id}/payout-settings",
    response_model=ReferrerPayoutSettings,
    responses=problem_responses(ReferrerNotFound, *details.SETTINGS_ERRORS, *PATCH_ERRORS),
)
async def update_payout_settings(
    referrer_id: UUID, body: PayoutSettingsUpdate, session: SessionDep, principal: SecretKey
) -> ReferrerPayoutSettings:
    """Set the referrer's payout details (stored as given, answered masked) or charity."""
    return await details.update_referrer_settings(session, principal, referrer_id, body)


# --- payout and donation batches --------------------------------------------------------------

PART_QUERY = Query(ge=1, le=1000, description="Which file of a batch of more than 5,000 lines")
PAYPAL_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"text/csv": {}},
        "description": "PayPal Payouts' bulk upload file (no header row); X-PayPal-Parts: "
        "how many files the batch takes",
    }
}


def _batch_routes(kind: BatchKind, segment: str) -> None:
    base = f"/v1/programs/{{program_id}}/{segment}"
    what = "cash rewards, per referrer" if kind == BatchKind.PAYOUT else "donations, per charity"

    @router.post(
        base,
        status_code=201,
        response_model=BatchOut,
        responses=problem_responses(*batches.CREATE_ERRORS, *POST_ERRORS),
        summary=f"Create a {kind} batch",
        description=f"Collect every referrer's approved {what} (clawbacks net out), due by "
        "the cut-off and at least the minimum, into an open batch; referrers owed but without "
        "payout details (or a charity) are listed in `left_out`, their rewards wait.",
    )
    async def create_batch(
        program_id: UUID, body: BatchCreate, session: SessionDep, principal: SecretKey
    ) -> BatchOut:
        return await batches.create_batch(session, principal, program_id, kind, body)

    @router.get(
        base,
        response_model=Page[BatchSummary],
        responses=problem_responses(ProgramNotFound, *PAGE_ERRORS),
        summary=f"List {kind} batches",
        description="The program's batches, oldest first; `?status=open` lists those to pay.",
    )
    async def list_batches(
        program_id: UUID,
        session: SessionDep,
        principal: SecretKey,
        page: PageDep,
        status: BatchStatus | None = None,
    ) -> Page[BatchSummary]:
        rows, next_cursor = await batches.list_batches(
            session, principal, program_id, kind, status, page
        )
        return Page(data=rows, next_cursor=next_cursor)

    @router.get(
        base + "/{batch_id}",
        response_model=BatchOut,
        responses=CSV_RESPONSE | problem_responses(batches.BatchNotFound, ValidationFailed),
        summary=f"Read a {kind} batch",
        description="The batch with its lines; `?format=csv` exports every line with the "
        "payout details (or the donor and charity) whole.",
    )
    async def read_batch(
        program_id: UUID,
        batch_id: UUID,
        session: SessionDep,
        principal: SecretKey,
        format_: Annotated[Format, FORMAT_QUERY] = "json",
    ) -> BatchOut | Response:
        if format_ == "csv":
            table = await exports.batch_csv(session, principal, program_id, kind, batch_id)
            return csv_response(table.filename, table.header, table.rows)
        return await batches.read_batch(session, principal, program_id, kind, batch_id)

    @router.post(
        base + "/{batch_id}/mark-paid",
        response_model=BatchOut,
        responses=problem_responses(
            batches.BatchNotFound, BatchNotOpen, InvalidTransition, *POST_ERRORS
        ),
        summary=f"Mark a {kind} batch paid",
        description="Every reward and clawback of the batch becomes paid, with the reference, "
        "in one transaction; `reward.paid` is sent for each.",
    )
    async def mark_paid(
        program_id: UUID,
        batch_id: UUID,
        body: BatchPay,
        session: SessionDep,
        principal: SecretKey,
    ) -> BatchOut:
        return await batches.mark_paid(
            session, principal, program_id, kind, batch_id, body.reference
        )

    @router.post(
        base + "/{batch_id}/cancel",
        response_model=BatchOut,
        responses=problem_responses(batches.BatchNotFound, BatchNotOpen, *POST_ERRORS),
        summary=f"Cancel a {kind} batch",
        description="The batch will not be paid: its rewards are released for a later batch.",
    )
    async def cancel(
        program_id: UUID, batch_id: UUID, session: SessionDep, principal: SecretKey
    ) -> BatchOut:
        return await batches.cancel(session, principal, program_id, kind, batch_id)


_batch_routes(BatchKind.PAYOUT, "payout-batches")
_batch_routes(BatchKind.DONATION, "donation-batches")


@router.get(
    "/v1/programs/{program_id}/payout-batches/{batch_id}/paypal.csv",
    response_class=Response,
    responses=PAYPAL_RESPONSE | problem_responses(batches.BatchNotFound, ValidationFailed),
)
async def paypal_file(
    program_id: UUID,
    batch_id: UUID,
    session: SessionDep,
    principal: SecretKey,
    part: Annotated[int, PART_QUERY] = 1,
) -> Response:
    """The batch's PayPal lines in PayPal Payouts' bulk upload format (Payouts Web)."""
    table, parts = await exports.paypal_csv(session, principal, program_id, batch_id, part)
    return Response(
        content=encode_rows(table.rows),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{table.filename}"',
            "X-PayPal-Parts": str(parts),
        },
    )
