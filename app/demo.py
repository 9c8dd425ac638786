"""`referral-service demo`: a realistic demo program, seeded through the service layer.

A handful of referrers with skewed popularity share their codes on a few channels; 90 days of
clicks (bots and duplicate visits among them), redemptions, purchases, repeat purchases,
refunds, self-referrals and organic orders follow, under two reward rules. Every event goes
through the same service functions as the API, so every rule (bot and duplicate flags,
attribution, rewards, refunds) applies. The API stamps clicks and redemptions with the time
they arrive; the seeder then moves them to their past moment, one visit at a time and in
time order, so duplicates are flagged and attribution is decided as if they had arrived live.

Idempotent: a program named DEMO_PROGRAM_NAME means the demo is there, and nothing is added.
"""

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from cachetools import TTLCache
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversions import service as conversions
from app.conversions.models import ConversionStatus
from app.conversions.schemas import ConversionCreate, RefundCreate
from app.core.access import ApiKeyPrincipal, KeyKind
from app.core.config import Settings
from app.core.db import utcnow
from app.core.pagination import PageParams
from app.keys import service as keys
from app.programs.models import Program
from app.programs.schemas import ProgramCreate
from app.programs.service import create_program
from app.referrers.models import Code
from app.referrers.schemas import CodeCreate, ReferrerUpsert
from app.referrers.service import CodeCache, create_code, upsert_referrer
from app.rewards import service as ledger
from app.rewards.rules import create_rule
from app.rewards.schemas import RuleCreate, Tier
from app.tracking import service as tracking
from app.tracking.models import Click, Referral
from app.tracking.schemas import ClickCreate, RedemptionCreate

DEMO_PROGRAM_NAME = "Demo: Northwind Coffee referrals"
DEMO_DAYS = 90
CURRENCY = "USD"
# The seeder acts as an admin; no key is stored for it.
SEEDER = ApiKeyPrincipal(
    key_id=UUID("00000000-0000-4000-8000-00000000d3e0"), kind=KeyKind.ADMIN, program_ids=None
)

# (external_id, name, email, popularity weight, preferred channel, vanity code)
REFERRERS: tuple[tuple[str, str, str, int, str, str | None], ...] = (
    ("cust_1001", "Ava Thompson", "ava@example.com", 40, "instagram", "AVA-COFFEE"),
    ("cust_1002", "Ben Okafor", "ben@example.com", 22, "newsletter", None),
    ("cust_1003", "Chloé Martin", "chloe@example.com", 13, "facebook", None),
    ("cust_1004", "Diego Alvarez", "diego@example.com", 9, "twitter", None),
    ("cust_1005", "Emma Schulz", "emma@example.com", 6, "direct", None),
    ("cust_1006", "Farid Haddad", "farid@example.com", 4, "facebook", None),
    ("cust_1007", "Grace Lee", "grace@example.com", 3, "direct", None),
    ("cust_1008", "Hiro Tanaka", "hiro@example.com", 2, "newsletter", None),
)

# name: (utm_source, utm_medium, utm_campaign, referring URL, base weight)
CHANNELS: dict[str, tuple[str | None, str | None, str | None, str | None, int]] = {
    "instagram": ("instagram", "social", "spring_launch", "https://l.instagram.com/", 24),
    "newsletter": ("newsletter", "email", "monthly_digest", None, 16),
    "facebook": ("facebook", "social", "spring_launch", "https://m.facebook.com/", 14),
    "twitter": ("twitter", "social", "creators", "https://t.co/", 8),
    "direct": (None, None, None, None, 28),
}

BROWSERS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
)
BOTS = (
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "WhatsApp/2.23.20.0",
    "curl/8.5.0",
)

BOT_SHARE = 0.07
DUPLICATE_SHARE = 0.09
REDEEM_SHARE = 0.11
PURCHASE_AFTER_REDEEM = 0.58
REPEAT_PURCHASE = 0.3
CLICK_PURCHASE = 0.03  # buys through the link's click_id without redeeming first
REFUND_SHARE = 0.07
ORGANIC_ORDERS_PER_DAY = 0.8
PAYOUT_AFTER = timedelta(days=30)


@dataclass(frozen=True)
class DemoProgram:
    program_id: UUID
    created: bool  # False: the demo was there already and nothing was added
    dashboard_key: str
    clicks: int = 0
    conversions: int = 0


@dataclass(order=True)
class _Event:
    at: datetime
    order: int
    kind: str = field(compare=False)
    data: dict[str, Any] = field(compare=False, default_factory=dict)


async def find_demo_program(session: AsyncSession) -> UUID | None:
    """The id of the demo program, when the database has one."""
    return await session.scalar(
        select(Program.id).where(Program.name == DEMO_PROGRAM_NAME).order_by(Program.created_at)
    )


async def has_programs(session: AsyncSession) -> bool:
    return await session.scalar(select(Program.id).limit(1)) is not None


async def ensure_demo(
    session: AsyncSession,
    settings: Settings,
    *,
    now: datetime | None = None,
    seed: int = 2024,
    scale: float = 1.0,
) -> DemoProgram:
    """The demo program, seeded unless it exists, and a new secret key limited to it.

    `scale` multiplies the traffic (tests seed a smaller demo); `seed` makes it repeatable.
    """
    program_id = await find_demo_program(session)
    created = program_id is None
    clicks = conversions_made = 0
    if program_id is None:
        seeder = _Seeder(session, settings, now or utcnow(), random.Random(seed), scale)
        program_id = await seeder.run()
        clicks, conversions_made = seeder.clicks, seeder.conversions
    dashboard = await keys.create_key(session, KeyKind.SECRET, [program_id], "demo dashboard")
    return DemoProgram(program_id, created, dashboard.secret, clicks, conversions_made)


class _Seeder:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        now: datetime,
        rng: random.Random,
        scale: float,
    ) -> None:
        self.session = session
        self.scale = scale
        self.settings = settings
        self.now = now.replace(microsecond=0)
        self.start = self.now - timedelta(days=DEMO_DAYS)
        self.rng = rng
        self.codes: list[str] = []
        self.events: list[_Event] = []
        self.clicks = 0
        self.conversions = 0
        self._visitors = 0
        self._customers = 0
        self._orders = 0
        self._addresses = 0
        self._click_of_visitor: dict[str, UUID] = {}
        self._pending_clicks: list[tuple[UUID, datetime]] = []
        # The codes never change while the demo is seeded: look each up once.
        self.code_cache: CodeCache = TTLCache(maxsize=64, ttl=3600)
        self._attributed: list[tuple[UUID, datetime, Decimal]] = []
        self.program_id: UUID | None = None

    async def run(self) -> UUID:
        self.program_id = program_id = await self._program()
        self._plan()
        writers = {"visit": self._visit, "redemption": self._redemption, "purchase": self._purchase}
        for event in sorted(self.events):
            if event.kind != "visit":
                await self._move_clicks()  # attribution reads the clicks' real moments
            await writers[event.kind](event)
        await self._move_clicks()
        await self._refunds()
        await self._payouts(program_id)
        return program_id

    async def _program(self) -> UUID:
        program = await create_program(
            self.session,
            SEEDER,
            ProgramCreate.model_validate(
                {
                    "name": DEMO_PROGRAM_NAME,
                    "landing_url": "https://shop.example.com/welcome",
                    "currency": CURRENCY,
                    "referee_offer": "10% off your first bag",
                    "attribution_window_days": 30,
                }
            ),
        )
        await create_rule(
            self.session,
            SEEDER,
            program.id,
            RuleCreate(
                name="Referrer: $10 per new customer, $15 from the 5th",
                recipient="referrer",
                kind="fixed",
                amount=Decimal("10.00"),
                currency=CURRENCY,
                trigger="first_purchase",
                min_order_amount=Decimal("20.00"),
                hold_days=14,
                tiers=[Tier(from_referral=5, amount=Decimal("15.00"))],
            ),
        )
        await create_rule(
            self.session,
            SEEDER,
            program.id,
            RuleCreate(
                name="Referee: 10% of the first order",
                recipient="referee",
                kind="percent",
                percent=Decimal("10"),
                trigger="first_purchase",
            ),
        )
        for external_id, name, email, _, _, vanity in REFERRERS:
            referrer, _ = await upsert_referrer(
                self.session,
                SEEDER,
                self.settings,
                program.id,
                ReferrerUpsert(external_id=external_id, name=name, email=email),
            )
            assert referrer.default_code is not None
            code = referrer.default_code.code
            if vanity is not None and not await self._code_taken(vanity):
                code = (
                    await create_code(
                        self.session, SEEDER, self.settings, referrer.id, CodeCreate(code=vanity)
                    )
                ).code
            self.codes.append(code)
        return program.id

    async def _code_taken(self, text: str) -> bool:
        found = await self.session.scalar(select(Code.id).where(Code.normalized == text.upper()))
        return found is not None

    # -- the plan: every event with its moment, decided before anything is written --

    def _plan(self) -> None:
        rng = self.rng
        weights = [referrer[3] for referrer in REFERRERS]
        for day in range(DEMO_DAYS):
            day_start = self.start + timedelta(days=day)
            # Growth over the quarter, busier weekends, and a newsletter feature around day 60.
            expected = (16 + 22 * day / DEMO_DAYS) * (1.3 if day_start.weekday() >= 5 else 1.0)
            expected *= self.scale
            if 58 <= day <= 61:
                expected *= 1.8
            visits = max(0, round(rng.gauss(expected, expected**0.5)))
            for _ in range(visits):
                at = day_start + timedelta(seconds=rng.randrange(86_400))
                referrer = rng.choices(range(len(REFERRERS)), weights)[0]
                self._plan_visit(at, referrer, feature=58 <= day <= 61)
            for _ in range(self._poisson(ORGANIC_ORDERS_PER_DAY * self.scale)):
                at = day_start + timedelta(seconds=rng.randrange(86_400))
                self._add(at, "purchase", customer=self._customer("guest"), how="organic")
        # Two referrers buy with their own code: recorded, never rewarded.
        for index, days_ago in ((1, 41), (3, 9)):
            self._add(
                self.now - timedelta(days=days_ago, hours=3),
                "purchase",
                customer=REFERRERS[index][0],
                code=self.codes[index],
                how="own_code",
            )
        self.events = [event for event in self.events if event.at < self.now - timedelta(minutes=1)]

    def _plan_visit(self, at: datetime, referrer: int, *, feature: bool) -> None:
        rng = self.rng
        channel = self._channel(referrer, feature)
        if rng.random() < BOT_SHARE:
            self._add(at, "visit", referrer=referrer, channel=channel, bot=True)
            return
        self._visitors += 1
        visitor = f"v_{self._visitors:05d}"
        repeat_after = (
            timedelta(minutes=rng.randrange(2, 600)) if rng.random() < DUPLICATE_SHARE else None
        )
        self._add(
            at,
            "visit",
            referrer=referrer,
            channel=channel,
            visitor=visitor,
            repeat_after=repeat_after,
        )
        roll = rng.random()
        if roll < REDEEM_SHARE:
            customer = self._customer("cust")
            redeemed = at + timedelta(minutes=rng.randrange(3, 2 * 24 * 60))
            self._add(redeemed, "redemption", visitor=visitor, customer=customer, code=referrer)
            if rng.random() < PURCHASE_AFTER_REDEEM:
                first = redeemed + timedelta(minutes=rng.randrange(10, 10 * 24 * 60))
                self._add(first, "purchase", customer=customer, how="history")
                if rng.random() < REPEAT_PURCHASE:
                    later = first + timedelta(days=rng.randrange(5, 40), hours=rng.randrange(24))
                    self._add(later, "purchase", customer=customer, how="history")
        elif roll < REDEEM_SHARE + CLICK_PURCHASE:
            bought = at + timedelta(minutes=rng.randrange(5, 3 * 24 * 60))
            self._add(bought, "purchase", customer=self._customer("cust"), visitor=visitor)

    def _channel(self, referrer: int, feature: bool) -> str:
        preferred = REFERRERS[referrer][4]
        names = list(CHANNELS)
        weights = [CHANNELS[name][4] * (4 if name == preferred else 1) for name in names]
        if feature:
            weights[names.index("newsletter")] *= 3
        return self.rng.choices(names, weights)[0]

    def _poisson(self, mean: float) -> int:
        count, threshold, product = 0, pow(2.718281828459045, -mean), self.rng.random()
        while product > threshold:
            count += 1
            product *= self.rng.random()
        return count

    def _customer(self, prefix: str) -> str:
        self._customers += 1
        return f"{prefix}_{5000 + self._customers}"

    def _add(self, at: datetime, kind: str, **data: Any) -> None:
        self.events.append(_Event(at, len(self.events), kind, data))

    def _amount(self) -> Decimal:
        # Mostly one or two bags, now and then a grinder.
        base = self.rng.choice((18, 24, 29, 34, 42, 48, 56, 64, 79, 95, 129, 189))
        cents = self.rng.choice(("00", "50", "90", "95", "99"))
        return Decimal(f"{base - 1}.{cents}")

    # -- writing, through the service layer --

    async def _visit(self, event: _Event) -> None:
        data = event.data
        source, medium, campaign, referring_url, _ = CHANNELS[data["channel"]]
        user_agent = self.rng.choice(BOTS) if data.get("bot") else self.rng.choice(BROWSERS)
        # One address per visit (from 198.18.0.0/15, set aside for tests), so that only a
        # visitor's own second click can be flagged as its duplicate.
        self._addresses += 1
        ip = f"198.18.{self._addresses // 250}.{self._addresses % 250 + 1}"
        visit = tracking.Visit(ip=ip, user_agent=user_agent)
        body = ClickCreate.model_validate(
            {
                "code": self.codes[data["referrer"]],
                "landing_url": "https://shop.example.com/welcome",
                "referring_url": referring_url,
                "utm_source": source,
                "utm_medium": medium,
                "utm_campaign": campaign,
                "visitor_id": data.get("visitor"),
            }
        )
        moments = [event.at]
        if data.get("repeat_after") is not None:
            moments.append(min(event.at + data["repeat_after"], self.now - timedelta(minutes=2)))
        clicks = [
            await tracking.record_click(
                self.session, self.settings, SEEDER, body, visit, cache=self.code_cache
            )
            for _ in moments
        ]
        # Moved in batches: only a visit's own clicks can be each other's duplicates, and
        # those are recorded together, so the stamps of other pending clicks do not matter.
        self._pending_clicks += [(c.click_id, at) for c, at in zip(clicks, moments, strict=True)]
        if len(self._pending_clicks) >= 500:
            await self._move_clicks()
        self.clicks += len(clicks)
        if data.get("visitor"):
            self._click_of_visitor[data["visitor"]] = clicks[0].click_id

    async def _redemption(self, event: _Event) -> None:
        data = event.data
        redeemed = await tracking.redeem(
            self.session,
            SEEDER,
            RedemptionCreate(
                code=self.codes[data["code"]],
                customer_id=data["customer"],
                email=f"{data['customer']}@example.net",
                click_id=self._click_of_visitor[data["visitor"]],
            ),
        )
        await self._move(Referral, [(redeemed.referral_id, event.at)])

    async def _purchase(self, event: _Event) -> None:
        data = event.data
        assert self.program_id is not None
        self._orders += 1
        amount = self._amount()
        body = ConversionCreate(
            program_id=self.program_id,
            event_id=f"demo-order-{self._orders:05d}",
            customer_id=data["customer"],
            amount=amount,
            currency=CURRENCY,
            occurred_at=event.at,
            code=data.get("code"),
            click_id=self._click_of_visitor[data["visitor"]] if data.get("visitor") else None,
            metadata={"channel": "web", "items": self.rng.randint(1, 3)},
        )
        conversion, _ = await conversions.record_conversion(
            self.session, SEEDER, body, self.settings
        )
        self.conversions += 1
        if conversion.status == ConversionStatus.ATTRIBUTED:
            self._attributed.append((conversion.id, event.at, amount))

    async def _move_clicks(self) -> None:
        if self._pending_clicks:
            await self._move(Click, self._pending_clicks)
            self._pending_clicks = []

    async def _move(
        self, model: type[Click] | type[Referral], moves: list[tuple[UUID, datetime]]
    ) -> None:
        """Put rows the API stamped "now" at the moment they happened."""
        table = cast(Table, model.__table__)
        await self.session.execute(
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(occurred_at=bindparam("at"), created_at=bindparam("at")),
            [{"row_id": row_id, "at": at} for row_id, at in moves],
        )

    async def _refunds(self) -> None:
        """Some orders come back, in full or in part, a few days after they were placed."""
        for conversion_id, at, amount in self._attributed:
            if self.rng.random() >= REFUND_SHARE or at > self.now - timedelta(days=2):
                continue
            partial = self.rng.random() < 0.5
            refund_amount = (amount * Decimal("0.4")).quantize(Decimal("0.01")) if partial else None
            await conversions.refund(
                self.session,
                SEEDER,
                conversion_id,
                RefundCreate(
                    amount=refund_amount,
                    refund_id=f"demo-refund-{conversion_id.hex[:12]}",
                    reason="damaged in transit" if partial else "returned unopened",
                ),
            )

    async def _payouts(self, program_id: UUID) -> None:
        """Approved referrer rewards older than a month have been paid out."""
        filters = ledger.RewardFilters(program_id=program_id, status="approved")
        due: list[UUID] = []
        cursor: str | None = None
        while True:
            rows, cursor = await ledger.list_rewards(
                self.session, SEEDER, filters, PageParams(limit=500, cursor=cursor)
            )
            due += [
                reward.id
                for reward in rows
                if reward.recipient == "referrer" and reward.hold_until <= self.now - PAYOUT_AFTER
            ]
            if cursor is None:
                break
        for reward_id in due:
            await ledger.mark_paid(self.session, SEEDER, reward_id, f"payout-{reward_id.hex[:8]}")
