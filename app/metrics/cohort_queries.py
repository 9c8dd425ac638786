"""Cohorts: referred and unattributed customers by first-purchase month, their later months."""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import (
    and_,
    exists,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.conversions.models import Conversion
from app.metrics.periods import Bucket
from app.metrics.queries import (
    Scope,
    Sums,
    in_window,
    periods_cte,
    within,
)
from app.tracking.models import Referral


@dataclass(frozen=True)
class CohortCell:
    purchases: int
    revenue: Decimal


@dataclass
class CohortCounts:
    """customers[(kind, cohort index)] and cells[(kind, cohort index, purchase index)]."""

    customers: dict[tuple[str, int], int]
    cells: dict[tuple[str, int, int], CohortCell]


async def cohorts(session: AsyncSession, scope: Scope, months: Sequence[Bucket]) -> CohortCounts:
    """Referred customers by month of referral, unattributed ones by month of first purchase.

    Purchases are all of the customer's conversions in the program (attributed or not) from
    the referral (or first purchase) on and before the window's end, by month of purchase.
    """
    sums = await Sums.start(session)
    window = scope.window
    table = periods_cte(months, "months")
    cohort_month = table.alias("cohort_month")
    purchase_month = table.alias("purchase_month")
    revenue = sums.money(Conversion.amount - Conversion.refunded_amount).label("revenue")

    referred_members = (
        select(cohort_month.c.i, func.count().label("customers"))
        .select_from(Referral)
        .join(cohort_month, within(Referral.occurred_at, cohort_month))
        .where(Referral.program_id == scope.program_id, in_window(Referral.occurred_at, window))
        .group_by(cohort_month.c.i)
    )
    referred_cells = (
        select(cohort_month.c.i, purchase_month.c.i.label("j"), func.count().label("n"), revenue)
        .select_from(Referral)
        .join(cohort_month, within(Referral.occurred_at, cohort_month))
        .join(
            Conversion,
            and_(
                Conversion.program_id == Referral.program_id,
                Conversion.customer_id == Referral.customer_id,
                Conversion.occurred_at >= Referral.occurred_at,
                Conversion.occurred_at < window.end,
            ),
        )
        .join(purchase_month, within(Conversion.occurred_at, purchase_month))
        .where(Referral.program_id == scope.program_id, in_window(Referral.occurred_at, window))
        .group_by(cohort_month.c.i, purchase_month.c.i)
    )

    referred = aliased(Referral, name="referred")
    first_at = func.min(Conversion.occurred_at)
    firsts = (
        select(Conversion.customer_id.label("customer_id"), first_at.label("first_at"))
        .where(
            Conversion.program_id == scope.program_id,
            ~exists().where(
                referred.program_id == scope.program_id,
                referred.customer_id == Conversion.customer_id,
            ),
        )
        .group_by(Conversion.customer_id)
        .having(in_window(first_at, window))
        .subquery("first_purchases")
    )
    organic_members = (
        select(cohort_month.c.i, func.count().label("customers"))
        .select_from(firsts)
        .join(cohort_month, within(firsts.c.first_at, cohort_month))
        .group_by(cohort_month.c.i)
    )
    organic_cells = (
        select(cohort_month.c.i, purchase_month.c.i.label("j"), func.count().label("n"), revenue)
        .select_from(firsts)
        .join(cohort_month, within(firsts.c.first_at, cohort_month))
        .join(
            Conversion,
            and_(
                Conversion.program_id == scope.program_id,
                Conversion.customer_id == firsts.c.customer_id,
                Conversion.occurred_at < window.end,
            ),
        )
        .join(purchase_month, within(Conversion.occurred_at, purchase_month))
        .group_by(cohort_month.c.i, purchase_month.c.i)
    )

    found = CohortCounts(customers={}, cells={})
    for kind, members, cells in (
        ("referred", referred_members, referred_cells),
        ("unattributed", organic_members, organic_cells),
    ):
        for row in await session.execute(members.add_cte(table)):
            found.customers[(kind, row.i)] = int(row.customers)
        for row in await session.execute(cells.add_cte(table)):
            found.cells[(kind, row.i, row.j)] = CohortCell(int(row.n), sums.value(row.revenue))
    return found
