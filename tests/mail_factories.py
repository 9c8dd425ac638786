"""Helpers for the lifecycle email tests: dispatch rounds, the outbox rows, enrolled referrers."""

from datetime import datetime
from typing import Any

from httpx import AsyncClient
from sqlalchemy import select

from app.emails.models import EmailMessage
from tests.factories import auth, make_key, make_program, make_referrer


async def dispatch(app: Any, now: datetime | None = None) -> int:
    """One round of the app's email dispatcher (the tests' stand-in for its loop)."""
    handled: int = await app.state.email_dispatcher.run_once(now)
    return handled


async def outbox(app: Any) -> list[EmailMessage]:
    """Every email message, oldest first, read afresh."""
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(
            select(EmailMessage).order_by(EmailMessage.created_at, EmailMessage.id)
        )
        return list(rows)


async def shop(
    client: AsyncClient, app: Any, **program: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An admin key, a program and its referrer Alice (alice@example.com), enrolled."""
    admin = await make_key(app)
    prog = await make_program(client, admin, **program)
    referrer = await make_referrer(
        client, admin, prog["id"], "alice", email="alice@example.com", name="Alice"
    )
    return admin, prog, referrer


async def put_template(
    client: AsyncClient, key: str, program_id: str, event: str, **body: Any
) -> Any:
    return await client.put(
        f"/v1/programs/{program_id}/email-templates/{event}", json=body, headers=auth(key)
    )
