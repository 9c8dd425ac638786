"""Providers' credentials per program, the fulfilments list for ops, and retrying one."""

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal, get_visible, scoped
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import AppError
from app.core.pagination import PageParams, paginate
from app.fulfilment.jobs import ISSUED
from app.fulfilment.models import Fulfilment, FulfilmentCredential
from app.fulfilment.schemas import (
    CredentialsCreate,
    FulfilmentOut,
    ProviderCreated,
    ProviderOut,
    ShopifyCredentials,
    StripeCredentials,
)
from app.fulfilment.states import FulfilmentStatus, Move, NotRetryable, moved
from app.programs.service import get_program
from app.rewards.models import RewardRule
from app.rewards.states import FulfilmentProvider
from app.webhooks.dispatcher import new_secret
from app.webhooks.targets import UnsafeTarget, check_target


class ProviderNotFound(AppError):
    status, code, title = 404, "fulfilment_provider_not_found", "Fulfilment provider not found"


class ProviderInUse(AppError):
    status, code, title = 409, "fulfilment_provider_in_use", "Active rules use the provider"


class InvalidFulfilmentUrl(AppError):
    status, code, title = 422, "invalid_fulfilment_url", "The URL may not receive requests"


class FulfilmentNotFound(AppError):
    status, code, title = 404, "fulfilment_not_found", "Fulfilment not found"


KNOWN_PREFIXES: tuple[str, ...] = ("shpat_", "shpca_", "shppa_", "shpua_", "whsec_")
KNOWN_PREFIXES += ("sk_live_", "sk_test_", "rk_live_", "rk_test_")


def _prefix(secret: str) -> str:
    """Enough to tell keys apart: the kind prefix (shpat_, sk_live_, whsec_) and 4 more."""
    kind = next((kind for kind in KNOWN_PREFIXES if secret.startswith(kind)), "")
    return secret[: len(kind) + 4]


async def add_provider(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    program_id: UUID,
    data: CredentialsCreate,
) -> ProviderCreated:
    """Store the program's credentials for a provider, replacing earlier ones (rotation).

    A fulfilment webhook gets a new signing secret, returned this once.
    """
    program = await get_program(session, principal, program_id)
    shop_domain = url = None
    if isinstance(data, ShopifyCredentials):
        shop_domain, secret = data.shop_domain, data.access_token
    elif isinstance(data, StripeCredentials):
        secret = data.secret_key
    else:
        url = str(data.url)
        try:
            await check_target(url, settings)
        except UnsafeTarget as exc:
            raise InvalidFulfilmentUrl(str(exc)) from exc
        secret = new_secret()
    now = utcnow()
    row = await session.scalar(
        select(FulfilmentCredential)
        .where(
            FulfilmentCredential.program_id == program.id,
            FulfilmentCredential.provider == data.provider,
        )
        .with_for_update()
    )
    if row is None:
        row = FulfilmentCredential(
            created_at=now, program_id=program.id, provider=FulfilmentProvider(data.provider)
        )
        session.add(row)
    row.shop_domain, row.url, row.secret, row.prefix = shop_domain, url, secret, _prefix(secret)
    row.updated_at = now
    await session.flush()
    shown = ProviderOut.model_validate(row).model_dump()
    return ProviderCreated(**shown, signing_secret=secret if url is not None else None)


async def list_providers(
    session: AsyncSession, principal: Principal, program_id: UUID
) -> list[ProviderOut]:
    program = await get_program(session, principal, program_id)
    rows = await session.scalars(
        select(FulfilmentCredential)
        .where(FulfilmentCredential.program_id == program.id)
        .order_by(FulfilmentCredential.provider)
    )
    return [ProviderOut.model_validate(row) for row in rows]


async def delete_provider(
    session: AsyncSession, principal: Principal, program_id: UUID, provider: FulfilmentProvider
) -> None:
    """Forget the credentials; refused while an active rule fulfils through the provider.

    Jobs already due wait (and retry) until credentials are given again or their window ends.
    """
    program = await get_program(session, principal, program_id, for_update=True)
    row = await session.scalar(
        select(FulfilmentCredential).where(
            FulfilmentCredential.program_id == program.id,
            FulfilmentCredential.provider == provider,
        )
    )
    if row is None:
        raise ProviderNotFound(f"The program has no {provider} credentials.")
    in_use = await session.scalar(
        select(RewardRule.id)
        .where(
            RewardRule.program_id == program.id,
            RewardRule.active.is_(True),
            RewardRule.fulfilment_provider == provider,
        )
        .limit(1)
    )
    if in_use is not None:
        raise ProviderInUse(
            f"Active rules fulfil through {provider} (rule {in_use}): change or deactivate them "
            "first, or post new credentials to replace these."
        )
    await session.delete(row)
    await session.flush()


@dataclass(frozen=True)
class FulfilmentFilters:
    program_id: UUID | None = None
    status: FulfilmentStatus | None = None
    reward_id: UUID | None = None


def fulfilment_out(row: Fulfilment) -> FulfilmentOut:
    out = FulfilmentOut.model_validate(row)
    waiting = row.status not in (FulfilmentStatus.PENDING, FulfilmentStatus.REVOKING)
    return out.model_copy(
        update={
            "code": row.code if row.status in ISSUED else None,
            "next_attempt_at": None if waiting else row.next_attempt_at,
        }
    )


async def list_fulfilments(
    session: AsyncSession, principal: Principal, filters: FulfilmentFilters, params: PageParams
) -> tuple[list[FulfilmentOut], str | None]:
    """Fulfilments oldest first (`?status=failed` is the ops queue): one statement a page."""
    query = scoped(select(Fulfilment), principal, Fulfilment.program_id)
    conditions = [
        Fulfilment.program_id == filters.program_id if filters.program_id else None,
        Fulfilment.status == filters.status if filters.status else None,
        Fulfilment.reward_id == filters.reward_id if filters.reward_id else None,
    ]
    query = query.where(*(condition for condition in conditions if condition is not None))
    rows, next_cursor = await paginate(session, query, Fulfilment, params)
    return [fulfilment_out(row) for row in rows], next_cursor


async def get_fulfilment(
    session: AsyncSession, principal: Principal, fulfilment_id: UUID, *, for_update: bool = False
) -> Fulfilment:
    query = select(Fulfilment).where(Fulfilment.id == fulfilment_id)
    if for_update:
        query = query.with_for_update()
    query = query.execution_options(populate_existing=True)
    return await get_visible(session, query, principal, FulfilmentNotFound, Fulfilment.program_id)


async def retry(session: AsyncSession, principal: Principal, fulfilment_id: UUID) -> FulfilmentOut:
    """Try again now, with a fresh retry window: a failed one is issued (or disabled) anew,
    a pending one skips the rest of its backoff. The same reward id and code are used, so a
    provider that got an earlier attempt does not issue twice."""
    row = await get_fulfilment(session, principal, fulfilment_id, for_update=True)
    target = moved(row.status, Move.RETRY)
    if target is None:
        raise NotRetryable(f"A {row.status} fulfilment cannot be retried.")
    now = utcnow()
    row.status, row.attempts, row.due_since, row.next_attempt_at = target, 0, now, now
    row.updated_at = now
    await session.flush()
    return fulfilment_out(row)
