"""Post-purchase prompts: with `auto_enrol_buyers`, every buyer becomes a referrer of the program.

app.conversions.service calls `enrol_buyer` for every recorded purchase (POST /v1/conversions and
the purchases ingested from Stripe and Shopify), in the purchase's transaction, and again on an
idempotent replay. The buyer is upserted as a referrer (external id = the purchase's customer
id) with a default code, so the purchase's answer can hand them their `share` at once.

- Off (the default): nothing is read or written, not one statement.
- Idempotent: a second purchase or a retry finds the referrer and creates nothing.
- Race-safe: the referrer is claimed with `INSERT … ON CONFLICT DO NOTHING` on the unique
  (program_id, external_id); two concurrent first purchases make one referrer, and the loser
  (which waits for the winner's commit) reads the winner's referrer and code.
- A buyer once erased (app.customers) is never enrolled again: their pseudonym in the program
  (as a referrer, a referral or a purchase) keeps them out, and an erased purchase's answer
  carries no share.
- A new enrolment emits `referrer.enrolled` and queues the `enrolled` email like a referrer
  created through the API (app.referrers.service.announce_enrolled).
"""

from uuid import UUID, uuid4

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions.models import Conversion
from app.core.config import Settings
from app.core.db import insert_ignoring_conflicts, utcnow
from app.customers.redaction import pseudonym
from app.programs.models import Program
from app.referrers.codes import code_state
from app.referrers.models import Code, Referrer
from app.referrers.schemas import Share
from app.referrers.service import announce_enrolled, insert_code
from app.referrers.share import share_for
from app.tracking.models import Referral

ERASED_PREFIX = "erased:"
# Erasure gives a person a later generation of pseudonym only when an earlier one is taken;
# a few cover every person erased and back a few times.
ERASED_GENERATIONS = 4


def _pseudonyms(settings: Settings, customer_id: str) -> list[str]:
    return [pseudonym(settings.pseudonym_key, customer_id, g) for g in range(ERASED_GENERATIONS)]


async def enrol_buyer(
    session: AsyncSession, settings: Settings, program: Program, conversion: Conversion
) -> Share | None:
    """Make the buyer of `conversion` a referrer of `program` if it enrols buyers; their share,
    or None."""
    customer_id = conversion.customer_id
    if not program.auto_enrol_buyers or customer_id.startswith(ERASED_PREFIX):
        return None
    erased = _pseudonyms(settings, customer_id)
    rows = (
        await session.execute(
            select(Referrer.external_id, Code)
            .outerjoin(Code, and_(Code.referrer_id == Referrer.id, Code.is_default.is_(True)))
            .where(
                Referrer.program_id == program.id,
                Referrer.external_id.in_([customer_id, *erased]),
            )
        )
    ).all()
    if any(external_id != customer_id for external_id, _ in rows):
        return None  # erased as a referrer of this program
    if rows:
        return _share(settings, program, rows[0][1])
    if await _erased_buyer(session, program.id, erased):
        return None
    referrer_id = await session.scalar(
        insert_ignoring_conflicts(
            session,
            Referrer.__table__,
            {
                "id": uuid4(),
                "program_id": program.id,
                "external_id": customer_id,
                "email": conversion.email,
                "name": None,
                "metadata": {},
                "created_at": utcnow(),
            },
        ).returning(Referrer.__table__.c.id)
    )
    if referrer_id is None:
        # A concurrent purchase by the same buyer enrolled them first (and has committed: the
        # insert waited for it): its referrer and code stand.
        return _share(settings, program, await _default_code(session, program.id, customer_id))
    referrer = await session.get(Referrer, referrer_id)
    assert referrer is not None
    code = await insert_code(session, settings, referrer, vanity=None, is_default=True)
    await announce_enrolled(
        session, settings, program, referrer, code, source="purchase", conversion_id=conversion.id
    )
    return _share(settings, program, code)


async def buyer_share(
    session: AsyncSession, settings: Settings, program: Program, customer_id: str
) -> Share | None:
    """The share of a buyer who is a referrer of a program that enrols buyers (a replay)."""
    if not program.auto_enrol_buyers or customer_id.startswith(ERASED_PREFIX):
        return None
    return _share(settings, program, await _default_code(session, program.id, customer_id))


async def _default_code(session: AsyncSession, program_id: UUID, customer_id: str) -> Code | None:
    """The default code of the program's referrer whose external id is the buyer's."""
    return await session.scalar(
        select(Code)
        .join(Referrer, Referrer.id == Code.referrer_id)
        .where(
            Referrer.program_id == program_id,
            Referrer.external_id == customer_id,
            Code.is_default.is_(True),
        )
    )


async def _erased_buyer(session: AsyncSession, program_id: UUID, erased: list[str]) -> bool:
    """Whether the program holds a referral or a purchase of the buyer from before an erasure."""
    found = await session.scalar(
        select(
            or_(
                exists().where(Referral.program_id == program_id, Referral.customer_id.in_(erased)),
                exists().where(
                    Conversion.program_id == program_id, Conversion.customer_id.in_(erased)
                ),
            )
        )
    )
    return bool(found)


def _share(settings: Settings, program: Program, code: Code | None) -> Share | None:
    if code is None or code_state(code, program, utcnow()) != "valid":
        return None
    return share_for(program, code.code, settings)
