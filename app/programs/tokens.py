"""Customer tokens: the merchant's backend vouches that a storefront visitor is a customer.

A publishable key is public, so anyone can name any customer id in a redemption. When a
program asks for proof (`redemption_proof`), a widget's redemption must carry a click on the
same code or a customer token: the merchant's backend, which knows who is logged in, signs

    rct1.<expires>.<mac>
    mac = base64url(HMAC-SHA256(secret, "rct1.<program id>.<expires>.<customer id>"))

with one of the program's customer token secrets, and the storefront passes it through. The
token binds the version, the program (as its canonical UUID), the expiry (Unix seconds) and the
customer id; only the customer id travels separately, in the redemption itself. Every active
secret is tried with a constant-time comparison, so a secret is rotated by making a second one,
deploying it, and deleting the first.
"""

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Principal
from app.core.db import utcnow
from app.core.errors import AppError
from app.programs.models import CustomerTokenSecret
from app.programs.schemas import TokenSecretCreated, TokenSecretOut
from app.programs.service import get_program

VERSION = "rct1"
SECRET_PREFIX = "rcs_"
SHOWN = len(SECRET_PREFIX) + 4
MAX_SECRETS = 2
# A token is minted for a page view or a session, not as a standing credential.
MAX_LIFETIME = timedelta(days=7)
_TOKEN = re.compile(r"^rct1\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class TooManyTokenSecrets(AppError):
    status, code, title = 409, "too_many_token_secrets", "The program has two token secrets"


class TokenSecretNotFound(AppError):
    status, code, title = 404, "token_secret_not_found", "Customer token secret not found"


class CustomerTokenInvalid(AppError):
    status, code, title = 422, "customer_token_invalid", "The customer token is not valid"


class CustomerTokenExpired(AppError):
    status, code, title = 422, "customer_token_expired", "The customer token has expired"


def sign(secret: str, program_id: UUID, customer_id: str, expires: int) -> str:
    """The token for `customer_id` in the program until `expires` (what a backend computes)."""
    message = f"{VERSION}.{program_id}.{expires}.{customer_id}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{VERSION}.{expires}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def check_token(
    session: AsyncSession, program_id: UUID, customer_id: str, token: str, now: datetime
) -> None:
    """CustomerTokenInvalid or CustomerTokenExpired unless `token` vouches for the customer."""
    parsed = _TOKEN.match(token)
    if parsed is None:
        raise CustomerTokenInvalid("A customer token reads rct1.<expires>.<signature>.")
    expires = int(parsed.group(1))
    matched = False
    for secret in await session.scalars(
        select(CustomerTokenSecret.secret).where(CustomerTokenSecret.program_id == program_id)
    ):
        expected = sign(secret, program_id, customer_id, expires)
        matched |= hmac.compare_digest(expected.encode(), token.encode())
    if not matched:
        raise CustomerTokenInvalid(
            "The token was not signed for this customer and program with one of its secrets."
        )
    if expires < now.timestamp():
        raise CustomerTokenExpired("The customer token has expired; mint a new one.")
    if expires > (now + MAX_LIFETIME).timestamp():
        raise CustomerTokenInvalid("A customer token may expire at most 7 days ahead.")


async def create_secret(
    session: AsyncSession, principal: Principal, program_id: UUID
) -> TokenSecretCreated:
    """A new secret for the program, shown this once; at most two at a time."""
    program = await get_program(session, principal, program_id, for_update=True)
    count = await session.scalar(
        select(func.count())
        .select_from(CustomerTokenSecret)
        .where(CustomerTokenSecret.program_id == program.id)
    )
    if (count or 0) >= MAX_SECRETS:
        raise TooManyTokenSecrets(
            f"A program has at most {MAX_SECRETS} token secrets (one more while rotating); "
            "delete the old one first."
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    row = CustomerTokenSecret(
        id=uuid4(), created_at=utcnow(), program_id=program.id, secret=secret, prefix=secret[:SHOWN]
    )
    session.add(row)
    await session.flush()
    return TokenSecretCreated(**TokenSecretOut.model_validate(row).model_dump(), secret=secret)


async def list_secrets(
    session: AsyncSession, principal: Principal, program_id: UUID
) -> list[TokenSecretOut]:
    """The program's secrets, by prefix only."""
    program = await get_program(session, principal, program_id)
    rows = await session.scalars(
        select(CustomerTokenSecret)
        .where(CustomerTokenSecret.program_id == program.id)
        .order_by(CustomerTokenSecret.created_at, CustomerTokenSecret.id)
    )
    return [TokenSecretOut.model_validate(row) for row in rows]


async def delete_secret(
    session: AsyncSession, principal: Principal, program_id: UUID, secret_id: UUID
) -> None:
    """Tokens signed with the secret stop working at once."""
    program = await get_program(session, principal, program_id)
    result = await session.execute(
        delete(CustomerTokenSecret).where(
            CustomerTokenSecret.id == secret_id, CustomerTokenSecret.program_id == program.id
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise TokenSecretNotFound("No such customer token secret in this program.")
