"""API keys: made with high entropy, shown once, kept only as a SHA-256 hash."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import (
    OPERATOR,
    ApiKeyPrincipal,
    KeyKind,
    Principal,
    grants_within_scope,
    sees_every_program,
)
from app.core.db import is_postgres, utcnow
from app.core.errors import Forbidden, NotFound, Unprocessable
from app.keys.models import ApiKey
from app.programs.models import Program

KIND_PREFIXES = {
    KeyKind.ADMIN: "rk_adm_",
    KeyKind.SECRET: "rk_sec_",
    KeyKind.PUBLISHABLE: "rk_pub_",
}
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    secret: str


def hash_key(raw_key: str) -> str:
    # The key has 256 bits of entropy, so a fast hash is as safe as a slow one here.
    return hashlib.sha256(raw_key.encode()).hexdigest()


async def create_key(
    session: AsyncSession,
    kind: KeyKind | str,
    program_ids: list[UUID] | None = None,
    name: str | None = None,
    principal: Principal = OPERATOR,
) -> CreatedKey:
    """Make a key of `kind`, optionally limited to `program_ids`; the secret is returned once.

    `principal` (the command line: every program) may only grant programs it holds itself.
    """
    if not grants_within_scope(principal, program_ids):
        raise Forbidden("A key limited to programs can only make keys for those programs.")
    if kind not in KIND_PREFIXES:
        raise Unprocessable(f"kind must be one of {', '.join(KIND_PREFIXES)}")
    kind = KeyKind(kind)  # validated just above; a plain string from the CLI or tests is fine
    if program_ids:
        found = set(await session.scalars(select(Program.id).where(Program.id.in_(program_ids))))
        missing = [str(pid) for pid in program_ids if pid not in found]
        if missing:
            raise NotFound(f"no program {', '.join(missing)}")
    raw_key = KIND_PREFIXES[kind] + secrets.token_urlsafe(32)
    api_key = ApiKey(
        kind=kind,
        name=name,
        prefix=raw_key[:12],
        key_hash=hash_key(raw_key),
        program_ids=sorted(str(pid) for pid in program_ids) if program_ids else None,
    )
    session.add(api_key)
    await session.flush()
    return CreatedKey(api_key=api_key, secret=raw_key)


async def authenticate(session: AsyncSession, raw_key: str) -> ApiKeyPrincipal | None:
    """The principal for a raw key, or None when it is unknown or revoked."""
    digest = hash_key(raw_key)
    api_key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if api_key is None or not hmac.compare_digest(api_key.key_hash, digest):
        return None
    if api_key.revoked_at is not None:
        return None
    await _record_use(session, api_key)
    program_ids = (
        frozenset(UUID(pid) for pid in api_key.program_ids)
        if api_key.program_ids is not None
        else None
    )
    return ApiKeyPrincipal(key_id=api_key.id, kind=KeyKind(api_key.kind), program_ids=program_ids)


async def _record_use(session: AsyncSession, api_key: ApiKey) -> None:
    """Keep last_used_at to the minute, without making requests queue on the key's row.

    The write stays in the request's transaction, on its one connection: a second connection
    per request lets a burst of requests hold every pooled connection while each waits for
    one more. On Postgres the row is taken with SKIP LOCKED, so while one request holds it
    (until its commit) the others with that key leave the write to it instead of queueing.
    """
    now = utcnow()
    if api_key.last_used_at is not None and now - api_key.last_used_at <= LAST_USED_RESOLUTION:
        return
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION)
    this_key = ApiKey.id == api_key.id
    if is_postgres(session):
        free = select(ApiKey.id).where(this_key, stale).with_for_update(skip_locked=True)
        this_key = ApiKey.id == free.scalar_subquery()
    await session.execute(update(ApiKey).where(this_key, stale).values(last_used_at=now))


async def revoke_key(
    session: AsyncSession, key_id_or_prefix: str, principal: Principal = OPERATOR
) -> ApiKey:
    """Revoke a key by its id or its displayed prefix; revoking twice is harmless.

    Only a principal for every program (an admin key, the command line) revokes keys.
    """
    if not sees_every_program(principal):
        raise Forbidden("Only an admin key for every program may revoke keys.")
    query = select(ApiKey)
    try:
        query = query.where(ApiKey.id == UUID(key_id_or_prefix))
    except ValueError:
        query = query.where(ApiKey.prefix == key_id_or_prefix)
    keys = list(await session.scalars(query))
    if len(keys) != 1:
        raise NotFound(f"no single API key matches {key_id_or_prefix!r}")
    api_key = keys[0]
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        await session.flush()
    return api_key


async def list_keys(session: AsyncSession, principal: ApiKeyPrincipal) -> list[ApiKey]:
    """Every key, or for a key limited to programs the keys limited to some of those programs."""
    keys = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
    # Key limits are a JSON list, not a column a statement can scope; a short list of keys.
    return [
        k for k in keys if grants_within_scope(principal, [UUID(p) for p in k.program_ids or ()])
    ]
