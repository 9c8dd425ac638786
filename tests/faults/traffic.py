"""Load for the fault tests, and the check that every acknowledged event is stored exactly once.

Each logical request (a click, a redemption or a purchase) is sent by a client that retries the
very same request, same Idempotency-Key or event_id, through dropped connections and 503s until
it gets another answer; that is what a well-behaved merchant backend or widget does. Every
attempt is recorded, so the tests can also assert on how each failure was answered and how fast.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.factories import BROWSER_UA

RETRY_PAUSE_SECONDS = 0.05
REWARD_AMOUNT = Decimal("5.00")
SUCCESS = {"click": {201}, "plain_click": {201}, "redemption": {201}, "conversion": {200, 201}}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class Seeded:
    """A program made through the HTTP API, with a paying rule, one referrer and its keys."""

    program_id: str
    referrer_id: str
    code: str
    secret_key: str
    publishable_key: str


async def seed_program(base_url: str, admin_key: str, run: str) -> Seeded:
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=auth(admin_key)) as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await http.post(path, json=body)
            assert response.status_code in (200, 201), response.text
            answer: dict[str, Any] = response.json()
            return answer

        program = await post(
            "/v1/programs",
            {
                "name": f"faults {run}",
                "landing_url": "https://shop.example.com/",
                "currency": "USD",
            },
        )
        await post(
            f"/v1/programs/{program['id']}/reward-rules",
            {
                "recipient": "referrer",
                "kind": "fixed",
                "amount": str(REWARD_AMOUNT),
                "currency": "USD",
                "trigger": "every_purchase",
            },
        )
        referrer = await post(
            f"/v1/programs/{program['id']}/referrers", {"external_id": f"{run}-referrer"}
        )
        keys = {
            kind: (await post("/v1/api-keys", {"kind": kind, "program_ids": [program["id"]]}))[
                "key"
            ]
            for kind in ("secret", "publishable")
        }
    return Seeded(
        program_id=program["id"],
        referrer_id=referrer["id"],
        code=referrer["default_code"]["code"],
        secret_key=keys["secret"],
        publishable_key=keys["publishable"],
    )


@dataclass(frozen=True)
class LogicalRequest:
    """An event a client wants stored; `tag` names it in the database (visitor, customer, order)."""

    kind: str
    tag: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    amount: Decimal = Decimal(0)


def click(seeded: Seeded, run: str, n: int) -> LogicalRequest:
    visitor = f"{run}-visitor-{n}"
    return LogicalRequest(
        kind="click",
        tag=visitor,
        path="/v1/clicks",
        body={"code": seeded.code, "visitor_id": visitor},
        headers=auth(seeded.publishable_key)
        | {
            "Idempotency-Key": f"{run}-click-{n}",
            "User-Agent": BROWSER_UA,
            # A distinct shopper per click (the service trusts X-Forwarded-For here), so every
            # click is unique and a re-inserted retry would show as one click too many.
            "X-Forwarded-For": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
        },
    )


def plain_click(seeded: Seeded, run: str, n: int) -> LogicalRequest:
    """A click without an Idempotency-Key: it goes through the group-commit click writer. A
    retry after a lost answer may store the visit again, but only flagged as a duplicate."""
    visitor = f"{run}-walkin-{n}"
    return LogicalRequest(
        kind="plain_click",
        tag=visitor,
        path="/v1/clicks",
        body={"code": seeded.code, "visitor_id": visitor},
        headers=auth(seeded.publishable_key)
        | {
            "User-Agent": BROWSER_UA,
            "X-Forwarded-For": f"10.{128 | (n >> 16) & 127}.{(n >> 8) & 255}.{n & 255}",
        },
    )


def redemption(seeded: Seeded, run: str, n: int) -> LogicalRequest:
    customer = f"{run}-newcomer-{n}"
    return LogicalRequest(
        kind="redemption",
        tag=customer,
        path="/v1/redemptions",
        body={"code": seeded.code, "customer_id": customer},
        headers=auth(seeded.publishable_key) | {"Idempotency-Key": f"{run}-redeem-{n}"},
    )


def conversion(seeded: Seeded, run: str, n: int) -> LogicalRequest:
    # No Idempotency-Key: a purchase is idempotent on its event_id.
    event_id = f"{run}-order-{n}"
    amount = Decimal("20.00") + Decimal(n % 100) / 100
    return LogicalRequest(
        kind="conversion",
        tag=event_id,
        path="/v1/conversions",
        body={
            "program_id": seeded.program_id,
            "event_id": event_id,
            "customer_id": f"{run}-buyer-{n}",
            "amount": str(amount),
            "currency": "USD",
            "code": seeded.code,
        },
        headers=auth(seeded.secret_key),
        amount=amount,
    )


def mixed_events(seeded: Seeded, run: str, limit: int) -> Iterator[LogicalRequest]:
    """Clicks (with and without an Idempotency-Key), redemptions and purchases in turn, at most
    `limit` of them."""
    makers = (click, plain_click, redemption, conversion)
    for n in count():
        if n >= limit:
            return
        yield makers[n % len(makers)](seeded, run, n // len(makers))


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt: its answer (or transport error) and how long it took."""

    kind: str
    started: float
    seconds: float
    status: int | None
    error: str | None = None
    content_type: str = ""
    retry_after: str | None = None
    code: str | None = None
    replayed: bool = False
    body: str = ""


@dataclass
class Outcome:
    request: LogicalRequest
    status: int | None
    answer: dict[str, Any] | None
    attempts: int

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _problem_code(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    try:
        return str(response.json().get("code"))
    except ValueError:
        return None


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _retryable(response: httpx.Response, code: str | None) -> bool:
    # 503 says "retry", and so does 409 idempotency_key_in_progress (the first attempt still
    # holds the key). A 500 is a bug: it ends the request, and the test fails on it.
    return response.status_code == 503 or code == "idempotency_key_in_progress"


@dataclass
class Load:
    """`clients` concurrent clients working through `requests`, each retrying until answered."""

    base_url: str
    requests: Iterable[LogicalRequest]
    clients: int = 8
    pause_seconds: float = 0.0
    request_deadline_seconds: float = 60.0
    attempt_timeout_seconds: float = 15.0
    outcomes: list[Outcome] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: int = 0
    _stopping: bool = False
    _marks: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    async def until_acknowledged(self, count: int) -> None:
        """Return right as the `count`-th acknowledgement arrives (within the same loop turn)."""
        if self.acknowledged >= count:
            return
        reached = asyncio.Event()
        self._marks.append((count, reached))
        await reached.wait()

    def stop(self) -> None:
        """Take no new logical request; the ones under way are still retried to an answer."""
        self._stopping = True

    async def run(self) -> None:
        pending = iter(self.requests)
        await asyncio.gather(*(self._client(pending) for _ in range(self.clients)))

    async def _client(self, pending: Iterator[LogicalRequest]) -> None:
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.attempt_timeout_seconds
        ) as http:
            while not self._stopping:
                request = next(pending, None)
                if request is None:
                    return
                self.outcomes.append(await self._until_answered(http, request))
                if self.pause_seconds:
                    await asyncio.sleep(self.pause_seconds)

    async def _until_answered(self, http: httpx.AsyncClient, request: LogicalRequest) -> Outcome:
        deadline = time.monotonic() + self.request_deadline_seconds
        tries = 0
        while True:
            tries += 1
            started = time.monotonic()
            try:
                response = await http.post(request.path, json=request.body, headers=request.headers)
            except httpx.TransportError as exc:
                self.attempts.append(
                    Attempt(
                        request.kind, started, time.monotonic() - started, None, type(exc).__name__
                    )
                )
            else:
                code = _problem_code(response)
                self.attempts.append(
                    Attempt(
                        request.kind,
                        started,
                        time.monotonic() - started,
                        response.status_code,
                        content_type=response.headers.get("content-type", ""),
                        retry_after=response.headers.get("retry-after"),
                        code=code,
                        replayed=response.headers.get("idempotent-replayed") == "true",
                        body=response.text[:300],
                    )
                )
                if not _retryable(response, code):
                    outcome = Outcome(request, response.status_code, _json(response), tries)
                    if outcome.acknowledged:
                        self.acknowledged += 1
                        for count, reached in self._marks:
                            if self.acknowledged >= count:
                                reached.set()
                    return outcome
            if time.monotonic() > deadline:
                return Outcome(request, None, None, tries)
            await asyncio.sleep(RETRY_PAUSE_SECONDS)


@dataclass(frozen=True)
class Stored:
    """What the database holds for one program, read directly (not through the service)."""

    clicks: list[Any]
    referrals: list[Any]
    conversions: list[Any]
    rewards: list[Any]
    redemption_count: int
    idempotency_keys: list[str]


async def read_stored(database_url: str, seeded: Seeded, run: str) -> Stored:
    engine = create_async_engine(database_url, poolclass=NullPool)
    program = {"program_id": UUID(seeded.program_id)}
    try:
        async with engine.connect() as db:

            async def rows(query: str, **params: Any) -> list[Any]:
                return list((await db.execute(text(query), program | params)).all())

            clicks = await rows(
                "SELECT id, visitor_id, is_bot, is_duplicate FROM clicks"
                " WHERE program_id = :program_id"
            )
            referrals = await rows(
                "SELECT id, customer_id, source FROM referrals WHERE program_id = :program_id"
            )
            conversions = await rows(
                "SELECT id, event_id, status, amount, refunded_amount FROM conversions"
                " WHERE program_id = :program_id"
            )
            rewards = await rows(
                "SELECT conversion_id, amount, status, entry_type FROM rewards"
                " WHERE program_id = :program_id"
            )
            [(redemption_count,)] = await rows(
                "SELECT redemption_count FROM codes WHERE program_id = :program_id"
                " AND normalized = :code",
                code=seeded.code.upper(),
            )
            keys = await rows(
                "SELECT idempotency_key FROM idempotency_records WHERE idempotency_key LIKE :run",
                run=f"{run}-%",
            )
    finally:
        await engine.dispose()
    return Stored(
        clicks, referrals, conversions, rewards, int(redemption_count), [k for (k,) in keys]
    )


def _once_each(name: str, tags: list[str]) -> Counter[str]:
    counted = Counter(tags)
    twice = {tag: n for tag, n in counted.items() if n > 1}
    assert not twice, f"{name} stored more than once: {twice}"
    return counted


def assert_stored_exactly_once(outcomes: list[Outcome], stored: Stored) -> dict[str, int]:
    """Every acknowledged event is stored once, under the id it was acknowledged with; nothing
    is stored twice; nothing is stored that was never sent. Returns the acknowledged counts."""
    sent = {
        kind: {o.request.tag: o for o in outcomes if o.request.kind == kind} for kind in SUCCESS
    }
    acked = {
        kind: {tag: o for tag, o in by_tag.items() if o.acknowledged}
        for kind, by_tag in sent.items()
    }
    for kind, by_tag in sent.items():
        refused = {
            tag: (o.status, o.answer)
            for tag, o in by_tag.items()
            if o.status is not None and o.status not in SUCCESS[kind]
        }
        assert not refused, f"{kind}s answered with an unexpected status: {refused}"

    visitors = {row.visitor_id for row in stored.clicks}
    assert visitors <= set(sent["click"]) | set(sent["plain_click"]), "unsent click stored"
    keyed = [row for row in stored.clicks if row.visitor_id in sent["click"]]
    _once_each("clicks", [row.visitor_id for row in keyed])
    click_ids = {row.visitor_id: str(row.id) for row in keyed}
    for tag, outcome in acked["click"].items():
        assert outcome.answer is not None
        assert click_ids.get(tag) == outcome.answer["click_id"], f"acknowledged click {tag} lost"
    # Without a key a retried click may be stored again, but never counted as unique again.
    plain = [row for row in stored.clicks if row.visitor_id in sent["plain_click"]]
    _once_each("unique plain clicks", [row.visitor_id for row in plain if not row.is_duplicate])
    plain_ids = {str(row.id) for row in plain}
    for tag, outcome in acked["plain_click"].items():
        assert outcome.answer is not None
        assert outcome.answer["click_id"] in plain_ids, f"acknowledged click {tag} lost"
        assert any(row.visitor_id == tag and not row.is_duplicate for row in plain), tag

    redeemed = [row for row in stored.referrals if row.source == "redemption"]
    _once_each("redemptions", [row.customer_id for row in redeemed])
    referral_ids = {row.customer_id: str(row.id) for row in redeemed}
    assert set(referral_ids) <= set(sent["redemption"]), "a redemption nobody sent was stored"
    for tag, outcome in acked["redemption"].items():
        assert outcome.answer is not None
        assert referral_ids.get(tag) == outcome.answer["referral_id"], f"redemption {tag} lost"
    # The code's use counter moved once per stored redemption, never for a retry.
    assert stored.redemption_count == len(redeemed)

    _once_each("conversions", [row.event_id for row in stored.conversions])
    conversion_ids = {row.event_id: str(row.id) for row in stored.conversions}
    assert set(conversion_ids) <= set(sent["conversion"]), "a purchase nobody sent was stored"
    for tag, outcome in acked["conversion"].items():
        assert outcome.answer is not None
        assert conversion_ids.get(tag) == outcome.answer["id"], f"purchase {tag} lost"
    # Purchases make referrals of their own (first attributed purchase of a new customer).
    by_purchase = [row for row in stored.referrals if row.source == "conversion"]
    assert len(by_purchase) == len(stored.conversions)
    # One reward per purchase, never a second one for a retried purchase.
    rewards = _once_each("rewards", [str(row.conversion_id) for row in stored.rewards])
    assert set(rewards) == set(conversion_ids.values())

    keys = _once_each("idempotency keys", stored.idempotency_keys)
    for kind in ("click", "redemption"):
        for outcome in acked[kind].values():
            assert keys[outcome.request.headers["Idempotency-Key"]] == 1

    return {kind: len(by_tag) for kind, by_tag in acked.items()}


async def assert_metrics_match_recount(
    base_url: str, seeded: Seeded, stored: Stored, acked: dict[str, int], outcomes: list[Outcome]
) -> None:
    """The summary the service reports equals a recount of the rows and the acknowledged events."""
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
        response = await http.get(
            f"/v1/programs/{seeded.program_id}/metrics/summary", headers=auth(seeded.secret_key)
        )
    assert response.status_code == 200, response.text
    summary = response.json()
    unique = [row for row in stored.clicks if not row.is_bot and not row.is_duplicate]
    attributed = [row for row in stored.conversions if row.status == "attributed"]
    recount = {
        "clicks": len(stored.clicks),
        "unique_clicks": len(unique),
        "referrals": len(stored.referrals),
        "conversions": len(attributed),
        "revenue": sum((row.amount - row.refunded_amount for row in attributed), Decimal(0)),
        "reward_cost": sum((row.amount for row in stored.rewards), Decimal(0)),
    }
    reported = {
        name: Decimal(summary[name]) if isinstance(recount[name], Decimal) else summary[name]
        for name in recount
    }
    assert reported == recount
    acked_revenue = sum(
        (o.request.amount for o in outcomes if o.request.kind == "conversion" and o.acknowledged),
        Decimal(0),
    )
    # Every distinct logical request acknowledged is counted once, whatever the retries; only
    # a click without a key may be stored twice, the second time as a duplicate.
    assert acked["click"] + acked["plain_click"] <= recount["clicks"]
    assert recount["clicks"] - acked["click"] - acked["plain_click"] <= sum(
        o.attempts - 1 for o in outcomes if o.request.kind == "plain_click"
    )
    assert recount == {
        "clicks": recount["clicks"],
        "unique_clicks": acked["click"] + acked["plain_click"],
        "referrals": acked["redemption"] + acked["conversion"],
        "conversions": acked["conversion"],
        "revenue": acked_revenue,
        "reward_cost": REWARD_AMOUNT * acked["conversion"],
    }
