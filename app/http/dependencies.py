"""Dependencies every router uses: the request's session and the page parameters."""

from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import InvalidLimit, PageParams


def get_session(request: Request) -> AsyncSession:
    """The request's session; app.http.unit_of_work commits it before the answer is sent."""
    session: AsyncSession = request.state.session
    return session


def page_params(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, description="Page size")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PageParams:
    settings = request.app.state.settings
    if limit is not None and limit > settings.max_page_limit:
        raise InvalidLimit(f"limit may be at most {settings.max_page_limit}")
    return PageParams(limit=limit or settings.default_page_limit, cursor=cursor)


SessionDep = Annotated[AsyncSession, Depends(get_session)]
PageDep = Annotated[PageParams, Depends(page_params)]
