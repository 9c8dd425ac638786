"""Who is calling and what they may see: the one module that decides visibility.

A caller is a `Principal`: an API key (admin, secret or publishable, optionally limited to some
programs) or a referrer session (one referrer of one program). Services never compare program
ids by hand; they pass their statements through `scoped`, load single objects with
`get_visible`, and check a row that did not come from a query (a cached code) with
`ensure_visible`. Whatever a principal may not see answers exactly like what does not exist.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, Select, false
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError

T = TypeVar("T")


class KeyKind(StrEnum):
    ADMIN = "admin"
    SECRET = "secret"
    PUBLISHABLE = "publishable"


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """An API key: its id and kind, and the programs it is limited to (None: every program)."""

    key_id: UUID
    kind: KeyKind
    program_ids: frozenset[UUID] | None


@dataclass(frozen=True)
class ReferrerPrincipal:
    """A referrer's own short-lived session: it sees that referrer of that program, no more."""

    session_id: UUID
    referrer_id: UUID
    program_id: UUID


Principal = ApiKeyPrincipal | ReferrerPrincipal


def sees_every_program(principal: Principal) -> bool:
    """True for keys that are not limited to programs (they may make programs, global hooks)."""
    return isinstance(principal, ApiKeyPrincipal) and principal.program_ids is None


def program_scope(principal: Principal, program_id: UUID | None = None) -> frozenset[UUID] | None:
    """The programs an action of `principal` may touch, narrowed to `program_id` when given.

    None means every program; an empty set means none.
    """
    if isinstance(principal, ReferrerPrincipal):
        allowed: frozenset[UUID] | None = frozenset({principal.program_id})
    else:
        allowed = principal.program_ids
    if program_id is None:
        return allowed
    return frozenset({program_id}) if allowed is None else allowed & {program_id}


def may_see(principal: Principal, program_id: UUID | None, referrer_id: UUID | None = None) -> bool:
    """Whether an object of `program_id` (None: global) and `referrer_id` is visible."""
    if isinstance(principal, ReferrerPrincipal):
        return program_id == principal.program_id and referrer_id == principal.referrer_id
    if principal.program_ids is None:
        return True
    return program_id is not None and program_id in principal.program_ids


def grants_within_scope(principal: Principal, program_ids: Iterable[UUID] | None) -> bool:
    """Whether a grant limited to `program_ids` (None or empty: every program), such as a new
    API key, stays inside what `principal` may touch: nobody hands out more than they hold."""
    allowed = program_scope(principal)
    if allowed is None:
        return True
    return bool(program_ids) and set(program_ids or ()) <= allowed


def scoped(
    statement: Select[Any],
    principal: Principal,
    program_column: ColumnElement[Any] | Any,
    referrer_column: ColumnElement[Any] | Any | None = None,
) -> Select[Any]:
    """`statement` limited to the rows `principal` may see.

    `program_column` names the program of each row (a NULL program is global: only keys for
    every program see it); `referrer_column` its referrer, for referrer sessions. A statement
    without a referrer column shows a referrer session nothing.
    """
    if isinstance(principal, ReferrerPrincipal):
        if referrer_column is None:
            return statement.where(false())
        return statement.where(
            program_column == principal.program_id, referrer_column == principal.referrer_id
        )
    if principal.program_ids is None:
        return statement
    return statement.where(program_column.in_(principal.program_ids))


async def get_visible(
    session: AsyncSession,
    statement: Select[T],
    principal: Principal,
    not_found: type[AppError],
    program_column: ColumnElement[Any] | Any,
    referrer_column: ColumnElement[Any] | Any | None = None,
) -> T:
    """The one object `statement` selects, if `principal` may see it; else `not_found`."""
    found = await session.scalar(scoped(statement, principal, program_column, referrer_column))
    if found is None:
        raise not_found()
    return found


def ensure_visible(
    principal: Principal,
    not_found: type[AppError] | AppError,
    program_id: UUID | None,
    referrer_id: UUID | None = None,
) -> None:
    """For an object that did not come from a scoped query (e.g. from a cache)."""
    if not may_see(principal, program_id, referrer_id):
        raise not_found() if isinstance(not_found, type) else not_found


# The command line acts with full access, as an admin key for every program would.
OPERATOR = ApiKeyPrincipal(key_id=UUID(int=0), kind=KeyKind.ADMIN, program_ids=None)
