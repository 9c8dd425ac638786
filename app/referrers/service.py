from datetime import datetime
from types import SimpleNamespace
from typing import Any, Literal, cast
from uuid import UUID, uuid4

from cachetools import TTLCache
from sqlalchemy import inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.access import Principal, ensure_visible, get_visible, may_see
from app.core.config import Settings
from app.core.db import insert_ignoring_conflicts, utcnow
from app.core.errors import AppError, Unprocessable
from app.core.pagination import PageParams, paginate
from app.programs.models import Program
from app.programs.service import get_program
from app.referrers.codes import code_state, generate_code, normalize
from app.referrers.models import Code, Referrer
from app.referrers.schemas import (
    CodeCreate,
    CodeLookup,
    CodeOut,
    CodeUpdate,
    ReferrerOut,
    ReferrerUpsert,
)
from app.referrers.share import share_for
from app.webhooks.outbox import emit_referrer_enrolled

CODE_GENERATION_ATTEMPTS = 8


class ReferrerNotFound(AppError):
    status, code, title = 404, "referrer_not_found", "Referrer not found"


class CodeNotFound(AppError):
    status, code, title = 404, "code_not_found", "Code not found"


class CodeTaken(AppError):
    status, code, title = 409, "code_taken", "The code is already taken"


async def upsert_referrer(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    program_id: UUID,
    data: ReferrerUpsert,
) -> tuple[ReferrerOut, bool]:
    """Create the referrer with a default code, or update the one with that external_id.

    Returns the referrer and whether it was created by this call.
    """
    program = await get_program(session, principal, program_id)
    values = {"program_id": program.id, "external_id": data.external_id}
    result = await session.execute(
        insert_ignoring_conflicts(
            session,
            Referrer.__table__,
            {
                **values,
                "id": (new_id := uuid4()),
                "email": data.email,
                "name": data.name,
                "metadata": data.metadata or {},
                "created_at": utcnow(),
            },
        ).returning(Referrer.__table__.c.id)
    )
    created = result.scalar() is not None
    referrer = await session.scalar(
        select(Referrer)
        .filter_by(**values)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert referrer is not None
    if created:
        assert referrer.id == new_id
        code = await insert_code(session, settings, referrer, vanity=None, is_default=True)
        await announce_enrolled(session, settings, program, referrer, code, source="api")
    else:
        for field in ("email", "name"):
            if getattr(data, field) is not None:
                setattr(referrer, field, getattr(data, field))
        if data.metadata is not None:
            referrer.metadata_ = data.metadata
        await session.flush()
    return await referrer_out(session, settings, referrer, program), created


async def announce_enrolled(
    session: AsyncSession,
    settings: Settings,
    program: Program,
    referrer: Referrer,
    code: Code,
    *,
    source: Literal["api", "purchase"],
    conversion_id: UUID | None = None,
) -> None:
    """A referrer just joined with `code` as their default code: the `referrer.enrolled`
    event (the referrer, how they joined, and their `share`) and the welcome email."""

    def payload() -> dict[str, Any]:
        out = ReferrerOut(
            id=referrer.id,
            program_id=referrer.program_id,
            external_id=referrer.external_id,
            email=referrer.email,
            name=referrer.name,
            metadata=referrer.metadata_,
            default_code=code_out(settings, code, program),
            created_at=referrer.created_at,
        )
        return out.model_dump(mode="json") | {
            "source": source,
            "conversion_id": str(conversion_id) if conversion_id else None,
            "share": share_for(program, code.code, settings).model_dump(mode="json"),
        }

    await emit_referrer_enrolled(session, referrer, code, payload)


async def get_referrer(
    session: AsyncSession, principal: Principal, referrer_id: UUID
) -> tuple[Referrer, Program]:
    query = select(Referrer).where(Referrer.id == referrer_id)
    referrer = await get_visible(
        session, query, principal, ReferrerNotFound, Referrer.program_id, Referrer.id
    )
    program = await session.get(Program, referrer.program_id)
    assert program is not None
    return referrer, program


async def referrer_out(
    session: AsyncSession, settings: Settings, referrer: Referrer, program: Program
) -> ReferrerOut:
    default_code = await session.scalar(
        select(Code).where(Code.referrer_id == referrer.id, Code.is_default.is_(True))
    )
    return ReferrerOut(
        id=referrer.id,
        program_id=referrer.program_id,
        external_id=referrer.external_id,
        email=referrer.email,
        name=referrer.name,
        metadata=referrer.metadata_,
        default_code=code_out(settings, default_code, program) if default_code else None,
        created_at=referrer.created_at,
    )


async def list_referrers(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    program_id: UUID,
    params: PageParams,
) -> tuple[list[ReferrerOut], str | None]:
    program = await get_program(session, principal, program_id)
    rows, next_cursor = await paginate(
        session, select(Referrer).where(Referrer.program_id == program.id), Referrer, params
    )
    codes = {
        code.referrer_id: code
        for code in await session.scalars(
            select(Code).where(
                Code.referrer_id.in_([r.id for r in rows]), Code.is_default.is_(True)
            )
        )
    }
    out = [
        ReferrerOut(
            id=r.id,
            program_id=r.program_id,
            external_id=r.external_id,
            email=r.email,
            name=r.name,
            metadata=r.metadata_,
            default_code=code_out(settings, codes[r.id], program) if r.id in codes else None,
            created_at=r.created_at,
        )
        for r in rows
    ]
    return out, next_cursor


async def create_code(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    referrer_id: UUID,
    data: CodeCreate,
) -> CodeOut:
    """A new code for the referrer: the vanity code asked for, or a random one."""
    referrer, program = await get_referrer(session, principal, referrer_id)
    code = await insert_code(
        session,
        settings,
        referrer,
        vanity=data.code,
        is_default=False,
        expires_at=data.expires_at,
        max_redemptions=data.max_redemptions,
    )
    return code_out(settings, code, program)


async def list_codes(
    session: AsyncSession, principal: Principal, settings: Settings, referrer_id: UUID
) -> list[CodeOut]:
    referrer, program = await get_referrer(session, principal, referrer_id)
    codes = await session.scalars(
        select(Code).where(Code.referrer_id == referrer.id).order_by(Code.created_at, Code.id)
    )
    return [code_out(settings, code, program) for code in codes]


# Codes and their programs for a few seconds, for clicks and links only (never for writes).
# The cache keeps plain column values: an ORM instance would be expired by the rollback of the
# request that loaded it, and fail when another request reads it.
CodeCache = TTLCache[str, tuple[dict[str, Any], dict[str, Any]]]


def code_cache(settings: Settings) -> CodeCache | None:
    if settings.code_cache_seconds <= 0:
        return None
    return TTLCache(maxsize=100_000, ttl=settings.code_cache_seconds)


def _columns(row: Any) -> dict[str, Any]:
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


async def find_code(
    session: AsyncSession,
    principal: Principal | None,
    text: str,
    *,
    for_update: bool = False,
    cache: CodeCache | None = None,
) -> tuple[Code, Program]:
    """The code (case-insensitive) and its program; another program's code is CodeNotFound."""
    if "\x00" in text:  # Postgres refuses NUL in text, and no code can contain one
        raise CodeNotFound(f"No code {text!r}.")
    normalized = normalize(text)
    cached = cache.get(normalized) if cache is not None and not for_update else None
    if cached is not None:
        # Detached copies, never added to a session: read-only by construction.
        code, program = Code(**cached[0]), Program(**cached[1])
    else:
        query = select(Code, Program).join(Program, Program.id == Code.program_id)
        query = query.where(Code.normalized == normalized)
        if for_update:
            query = query.with_for_update(of=Code)
        row = (await session.execute(query)).first()
        if row is None:
            raise CodeNotFound(f"No code {text!r}.")
        code, program = row
        if cache is not None:
            cache[normalized] = (_columns(code), _columns(program))
    if principal is not None:
        # Word for word the answer for a code that does not exist: no probing other programs.
        ensure_visible(principal, CodeNotFound(f"No code {text!r}."), program.id, code.referrer_id)
    return code, program


def cached_code(
    cache: CodeCache | None, principal: Principal | None, text: str
) -> tuple[Code, Program] | None:
    """The code and its program from the cache alone (the lean path, app.http.lean); None when
    it is not there or not visible to `principal`: the caller then takes find_code's way, which
    reads the database and answers CodeNotFound itself."""
    if cache is None or "\x00" in text:
        return None
    cached = cache.get(normalize(text))
    if cached is None:
        return None
    # Read-only views of the cached columns: no ORM instance (and its instrumentation) built.
    code = cast(Code, SimpleNamespace(**cached[0]))
    program = cast(Program, SimpleNamespace(**cached[1]))
    if principal is not None and not may_see(principal, program.id, code.referrer_id):
        return None
    return code, program


async def load_code(
    sessionmaker: async_sessionmaker[AsyncSession],
    cache: CodeCache,
    principal: Principal | None,
    text: str,
) -> tuple[Code, Program] | None:
    """cached_code, or on a miss the code read and cached (the lean path's refill); None when
    there is no such code for `principal`."""
    found = cached_code(cache, principal, text)
    if found is not None:
        return found
    async with sessionmaker() as session:
        try:
            await find_code(session, None, text, cache=cache)
        except CodeNotFound:
            return None
    return cached_code(cache, principal, text)


async def lookup_code(session: AsyncSession, principal: Principal, text: str) -> CodeLookup:
    """What a widget may show of a code: whether it is valid, the referee's offer, and how long
    (and by which model) the program attributes a visit through it."""
    code, program = await find_code(session, principal, text)
    state = code_state(code, program, utcnow())
    return CodeLookup(
        code=code.code,
        valid=state == "valid",
        state=state,
        program_name=program.name,
        referee_offer=program.referee_offer,
        attribution_model=program.attribution_model,
        attribution_window_days=program.attribution_window_days,
    )


async def update_code(
    session: AsyncSession, principal: Principal, settings: Settings, text: str, data: CodeUpdate
) -> CodeOut:
    code, program = await find_code(session, principal, text, for_update=True)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("disabled", False) is None:
        raise Unprocessable("disabled cannot be null")
    for field, value in changes.items():
        setattr(code, field, value)
    await session.flush()
    return code_out(settings, code, program)


def code_out(settings: Settings, code: Code, program: Program) -> CodeOut:
    return CodeOut(
        code=code.code,
        program_id=code.program_id,
        referrer_id=code.referrer_id,
        is_default=code.is_default,
        is_vanity=code.is_vanity,
        disabled=code.disabled,
        expires_at=code.expires_at,
        max_redemptions=code.max_redemptions,
        redemption_count=code.redemption_count,
        state=code_state(code, program, utcnow()),
        link=f"{settings.public_base_url.rstrip('/')}/r/{code.code}",
        created_at=code.created_at,
    )


async def increment_redemptions(session: AsyncSession, code: Code) -> bool:
    """Take one use of the code atomically; False when no use is left.

    The guarded UPDATE re-checks the count under the row lock, so two concurrent
    redemptions of a code with one use left cannot both win.
    """
    result = await session.execute(
        update(Code)
        .where(
            Code.id == code.id,
            (Code.max_redemptions.is_(None)) | (Code.redemption_count < Code.max_redemptions),
        )
        .values(redemption_count=Code.redemption_count + 1)
        .returning(Code.redemption_count)
    )
    count = result.scalar()
    if count is None:
        return False
    code.redemption_count = count
    return True


async def insert_code(
    session: AsyncSession,
    settings: Settings,
    referrer: Referrer,
    *,
    vanity: str | None,
    is_default: bool,
    expires_at: datetime | None = None,
    max_redemptions: int | None = None,
) -> Code:
    attempts = 1 if vanity else CODE_GENERATION_ATTEMPTS
    for _ in range(attempts):
        text = vanity or generate_code(settings.code_length)
        code_id = uuid4()
        result = await session.execute(
            insert_ignoring_conflicts(
                session,
                Code.__table__,
                {
                    "id": code_id,
                    "program_id": referrer.program_id,
                    "referrer_id": referrer.id,
                    "code": text,
                    "normalized": normalize(text),
                    "is_default": is_default,
                    "is_vanity": vanity is not None,
                    "disabled": False,
                    "expires_at": expires_at,
                    "max_redemptions": max_redemptions,
                    "redemption_count": 0,
                    "created_at": utcnow(),
                },
            ).returning(Code.__table__.c.id)
        )
        if result.scalar() is not None:
            code = await session.get(Code, code_id)
            assert code is not None
            return code
    if vanity:
        raise CodeTaken(f"The code {vanity!r} is taken (codes are unique ignoring case).")
    raise RuntimeError("could not generate a unique code")  # 8 collisions at ≥40 bits: never
