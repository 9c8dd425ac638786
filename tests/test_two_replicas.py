"""Two service processes against one Postgres: duplicates and races still resolve exactly once.

Two separate uvicorn processes (two replicas, not two workers of one) serve the same database
on two loopback ports, and share nothing else: no memory, no lock, no queue. Clients send the
same purchase, the same redemption, the same Idempotency-Key to both at once; afterwards the
database is read directly. What makes it hold is in the database: the unique (program,
event_id) and (program, customer) constraints, the guarded UPDATE on a code's use count, and a
transaction-scoped advisory lock per Idempotency-Key. The last test checks what sizing a
replica's pool relies on: a request holds one pooled connection at a time.
"""

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.main import create_app
from tests.factories import BROWSER_UA, make_key, make_program
from tests.faults.server import ServiceProcess, create_admin_key, service_env
from tests.faults.traffic import REWARD_AMOUNT, Seeded, auth, seed_program
from tests.settings import DATABASE_URL, settings_for_tests

pytestmark = pytest.mark.postgres

# Postgres' connections are shared with everyone else's tests: 4 per replica (no overflow).
POOL_SIZE = 4
IN_FLIGHT = 16  # requests under way at once, over both replicas
COPIES = 6  # each duplicate is sent this many times, alternately to each replica
REFEREE_PERCENT = Decimal("10")
RETRY_PAUSE_SECONDS = 0.05
RETRY_DEADLINE_SECONDS = 20.0
# 503 (pool or database busy) and 409 concurrent_update (a deadlock victim) both say "retry";
# a well-behaved client does, and the outcome must still be exactly once.
ALWAYS_RETRIED = frozenset({"concurrent_update"})


@dataclass(frozen=True)
class Replicas:
    services: tuple[ServiceProcess, ServiceProcess]
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
    seeded: Seeded
    admin_key: str


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    logs = tmp_path_factory.mktemp("replicas")
    env = service_env(
        DATABASE_URL,
        database_pool_size=POOL_SIZE,
        # Correctness, not overload, is tested here: wait for a connection rather than 503.
        database_pool_timeout_seconds=30,
        forwarded_allow_ips="127.0.0.1",
        webhook_dispatch_interval_seconds=0,
    )
    services = (
        ServiceProcess(env, logs / "replica-a.log"),
        ServiceProcess(env, logs / "replica-b.log"),
    )
    try:
        admin_key, _, _ = await asyncio.gather(
            create_admin_key(DATABASE_URL), services[0].start(), services[1].start()
        )
        assert services[0].pid != services[1].pid and services[0].port != services[1].port
        seeded = await seed_program(services[0].base_url, admin_key, f"replicas-{uuid4().hex[:8]}")
        # A second rule, for the referee: "one set of rewards" is two rewards per purchase.
        async with httpx.AsyncClient(base_url=services[1].base_url, timeout=10) as http:
            response = await http.post(
                f"/v1/programs/{seeded.program_id}/reward-rules",
                json={
                    "recipient": "referee",
                    "kind": "percent",
                    "percent": str(REFEREE_PERCENT),
                    "trigger": "every_purchase",
                },
                headers=auth(admin_key),
            )
            assert response.status_code == 201, response.text
        async with (
            httpx.AsyncClient(base_url=services[0].base_url, timeout=30) as a,
            httpx.AsyncClient(base_url=services[1].base_url, timeout=30) as b,
        ):
            yield Replicas(services, (a, b), seeded, admin_key)
    finally:
        for service in services:
            try:
                await service.stop()
            finally:
                service.kill_now()
                service.close_log()


@dataclass(frozen=True)
class Job:
    """One HTTP request for one replica (0 or 1); `group` names what it is a copy of."""

    replica: int
    group: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class Answer:
    job: Job
    status: int
    text: str
    code: str | None
    replayed: bool
    retried: Counter[str]

    def json(self) -> Any:
        return httpx.Response(self.status, text=self.text).json()


async def send_all(
    replicas: Replicas, jobs: Iterable[Job], retry_on: frozenset[str] = ALWAYS_RETRIED
) -> list[Answer]:
    """Send every job at once (at most IN_FLIGHT under way); each is retried on 503 or a
    problem code in `retry_on` until it gets another answer, within RETRY_DEADLINE_SECONDS."""
    in_flight = asyncio.Semaphore(IN_FLIGHT)

    async def send(job: Job) -> Answer:
        retried: Counter[str] = Counter()
        deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
        while True:
            async with in_flight:
                response = await replicas.clients[job.replica].post(
                    job.path, json=job.body, headers=job.headers
                )
            problem = response.headers.get("content-type", "").startswith("application/problem")
            code = response.json().get("code") if problem else None
            retry = response.status_code == 503 or code in retry_on
            if not retry or time.monotonic() > deadline:
                return Answer(
                    job,
                    response.status_code,
                    response.text,
                    code,
                    response.headers.get("idempotent-replayed") == "true",
                    retried,
                )
            retried[code or str(response.status_code)] += 1
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    return list(await asyncio.gather(*(send(job) for job in jobs)))


def copies(group: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> list[Job]:
    """COPIES jobs sending the same request, alternately to each replica."""
    return [Job(n % 2, group, path, body, headers) for n in range(COPIES)]


def by_group(answers: list[Answer]) -> dict[str, list[Answer]]:
    groups: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        groups[answer.job.group].append(answer)
    return groups


def no_server_errors(answers: list[Answer]) -> None:
    errors = [(a.job.group, a.status, a.text[:200]) for a in answers if a.status >= 500]
    assert not errors, f"server errors (after retries): {errors[:5]}"


async def query(sql: str, **params: Any) -> list[Any]:
    """Rows read straight from the database, not through either replica."""
    engine = create_async_engine(DATABASE_URL, poolclass=NullPool)
    try:
        async with engine.connect() as db:
            return list((await db.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def make_code(replicas: Replicas, referrer_id: str, **body: Any) -> str:
    response = await replicas.clients[1].post(
        f"/v1/referrers/{referrer_id}/codes", json=body, headers=auth(replicas.admin_key)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["code"])


async def make_referrer(replicas: Replicas, external_id: str) -> str:
    response = await replicas.clients[0].post(
        f"/v1/programs/{replicas.seeded.program_id}/referrers",
        json={"external_id": external_id},
        headers=auth(replicas.admin_key),
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


EVENTS = 20


async def test_same_purchase_on_both_replicas_is_recorded_and_rewarded_once(
    replicas: Replicas,
) -> None:
    seeded, run = replicas.seeded, f"order-{uuid4().hex[:8]}"
    jobs = [
        job
        for n in range(EVENTS)
        for job in copies(
            f"{run}-{n}",
            "/v1/conversions",
            {
                "program_id": seeded.program_id,
                "event_id": f"{run}-{n}",
                "customer_id": f"{run}-buyer-{n}",
                "amount": f"{20 + n}.50",
                "currency": "USD",
                "code": seeded.code,
            },
            auth(seeded.secret_key),
        )
    ]

    answers = await send_all(replicas, jobs)

    no_server_errors(answers)
    for event_id, group in by_group(answers).items():
        statuses = Counter(a.status for a in group)
        # One replica made it; every other copy, on either replica, was told it is a retry.
        assert statuses == {201: 1, 200: COPIES - 1}, (event_id, statuses, group[0].text)
        assert {a.job.replica for a in group} == {0, 1}
        assert len({a.text for a in group}) == 1, f"{event_id}: answers differ"
        assert len(group[0].json()["rewards"]) == 2

    stored = await query(
        "SELECT c.event_id, count(DISTINCT c.id) AS conversions, count(r.id) AS rewards,"
        " coalesce(sum(r.amount), 0) AS reward_total"
        " FROM conversions c LEFT JOIN rewards r ON r.conversion_id = c.id"
        " WHERE c.program_id = :program AND c.event_id LIKE :run"
        " GROUP BY c.event_id",
        program=seeded.program_id,
        run=f"{run}-%",
    )
    assert len(stored) == EVENTS
    for row in stored:
        n = int(row.event_id.rsplit("-", 1)[1])
        amount = Decimal(f"{20 + n}.50")
        assert (row.conversions, row.rewards) == (1, 2), row
        assert row.reward_total == REWARD_AMOUNT + (amount * REFEREE_PERCENT / 100).quantize(
            Decimal("0.01")
        ), row
    [(referrals,)] = await query(
        "SELECT count(*) FROM referrals WHERE program_id = :program AND customer_id LIKE :run",
        program=seeded.program_id,
        run=f"{run}-buyer-%",
    )
    assert referrals == EVENTS


CODES = 10


async def test_last_use_of_a_code_goes_to_one_customer_across_replicas(
    replicas: Replicas,
) -> None:
    seeded, run = replicas.seeded, f"last-use-{uuid4().hex[:8]}"
    codes = [await make_code(replicas, seeded.referrer_id, max_redemptions=1) for _ in range(CODES)]
    # Different customers race for each code's only use, half on each replica.
    jobs = [
        Job(
            n % 2,
            code,
            "/v1/redemptions",
            {"code": code, "customer_id": f"{run}-{code}-{n}"},
            auth(seeded.publishable_key),
        )
        for code in codes
        for n in range(COPIES)
    ]

    answers = await send_all(replicas, jobs)

    no_server_errors(answers)
    for code, group in by_group(answers).items():
        outcomes = Counter(a.code or str(a.status) for a in group)
        assert outcomes == {"201": 1, "code_exhausted": COPIES - 1}, (code, outcomes)
    stored = await query(
        "SELECT c.code, c.redemption_count, count(r.id) AS referrals"
        " FROM codes c LEFT JOIN referrals r ON r.code_id = c.id"
        " WHERE c.code = ANY(:codes) GROUP BY c.code, c.redemption_count",
        codes=codes,
    )
    assert sorted((row.code, row.redemption_count, row.referrals) for row in stored) == sorted(
        (code, 1, 1) for code in codes
    )
    winners = {a.json()["customer_id"] for a in answers if a.status == 201}
    [(referred,)] = await query(
        "SELECT count(*) FROM referrals WHERE program_id = :program AND customer_id LIKE :run",
        program=seeded.program_id,
        run=f"{run}-%",
    )
    assert referred == len(winners) == CODES


CUSTOMERS = 10


async def test_customer_redeeming_on_both_replicas_is_referred_once(replicas: Replicas) -> None:
    seeded, run = replicas.seeded, f"same-customer-{uuid4().hex[:8]}"
    # Codes of two referrers without a use limit: only the (program, customer) rule can decide.
    referrers = [await make_referrer(replicas, f"{run}-referrer-{n}") for n in range(2)]
    codes = [await make_code(replicas, referrer) for referrer in referrers for _ in range(2)]
    jobs = [
        Job(
            n % 2,
            customer,
            "/v1/redemptions",
            {"code": codes[n % len(codes)], "customer_id": customer},
            auth(seeded.publishable_key),
        )
        for customer in (f"{run}-customer-{c}" for c in range(CUSTOMERS))
        for n in range(COPIES)
    ]

    answers = await send_all(replicas, jobs)

    no_server_errors(answers)
    for customer, group in by_group(answers).items():
        outcomes = Counter(a.code or str(a.status) for a in group)
        assert outcomes == {"201": 1, "already_referred": COPIES - 1}, (customer, outcomes)
    referrals = await query(
        "SELECT customer_id, count(*) AS n FROM referrals"
        " WHERE program_id = :program AND customer_id LIKE :run GROUP BY customer_id",
        program=seeded.program_id,
        run=f"{run}-customer-%",
    )
    assert sorted((row.customer_id, row.n) for row in referrals) == sorted(
        (f"{run}-customer-{c}", 1) for c in range(CUSTOMERS)
    )
    # A losing redemption's use of its code was rolled back with it.
    [(uses,)] = await query(
        "SELECT sum(redemption_count) FROM codes WHERE code = ANY(:codes)", codes=codes
    )
    assert uses == CUSTOMERS


KEYS = 12


async def test_idempotency_key_on_both_replicas_takes_effect_once(replicas: Replicas) -> None:
    seeded, run = replicas.seeded, f"keyed-{uuid4().hex[:8]}"
    headers = auth(seeded.publishable_key) | {"User-Agent": BROWSER_UA}
    jobs = []
    for n in range(KEYS):
        # Without the key, every copy of this click would be a row of its own.
        click = {"code": seeded.code, "visitor_id": f"{run}-visitor-{n}"}
        jobs += copies(
            f"click-{n}",
            "/v1/clicks",
            click,
            headers | {"Idempotency-Key": f"{run}-click-{n}", "X-Forwarded-For": f"10.9.0.{n}"},
        )
        redemption = {"code": seeded.code, "customer_id": f"{run}-newcomer-{n}"}
        jobs += copies(
            f"redemption-{n}",
            "/v1/redemptions",
            redemption,
            headers | {"Idempotency-Key": f"{run}-redeem-{n}"},
        )

    answers = await send_all(
        replicas, jobs, retry_on=ALWAYS_RETRIED | {"idempotency_key_in_progress"}
    )

    no_server_errors(answers)
    for group_name, group in by_group(answers).items():
        assert [a.status for a in group] == [201] * COPIES, (group_name, group[0].text)
        assert len({a.text for a in group}) == 1, f"{group_name}: answers differ"
        # One copy ran; every other one, on either replica, got the stored answer back.
        assert sorted(a.replayed for a in group) == [False] + [True] * (COPIES - 1)
    clicks = await query(
        "SELECT id, visitor_id FROM clicks WHERE program_id = :program AND visitor_id LIKE :run",
        program=seeded.program_id,
        run=f"{run}-visitor-%",
    )
    answered = {a.json()["click_id"] for a in answers if a.job.path == "/v1/clicks"}
    assert len(clicks) == KEYS
    assert {str(row.id) for row in clicks} == answered
    referrals = await query(
        "SELECT id FROM referrals WHERE program_id = :program AND customer_id LIKE :run",
        program=seeded.program_id,
        run=f"{run}-newcomer-%",
    )
    assert len(referrals) == KEYS
    assert {str(row.id) for row in referrals} == {
        a.json()["referral_id"] for a in answers if a.job.path == "/v1/redemptions"
    }
    [(records,)] = await query(
        "SELECT count(*) FROM idempotency_records WHERE idempotency_key LIKE :run",
        run=f"{run}-%",
    )
    assert records == 2 * KEYS


CLICKS = 200


async def test_every_click_acknowledged_by_either_replica_is_stored(replicas: Replicas) -> None:
    seeded, run = replicas.seeded, f"clicks-{uuid4().hex[:8]}"
    headers = auth(seeded.publishable_key) | {"User-Agent": BROWSER_UA}
    # No Idempotency-Key: each replica's group-commit writer batches these on its own.
    jobs = [
        Job(
            n % 2,
            f"click-{n}",
            "/v1/clicks",
            {"code": seeded.code, "visitor_id": f"{run}-{n}"},
            headers | {"X-Forwarded-For": f"10.8.{n >> 8}.{n & 255}"},
        )
        for n in range(CLICKS)
    ]

    answers = await send_all(replicas, jobs, retry_on=frozenset())

    statuses = Counter((a.job.replica, a.status) for a in answers)
    assert statuses == {(0, 201): CLICKS // 2, (1, 201): CLICKS // 2}, statuses
    acknowledged = {a.json()["click_id"] for a in answers}
    stored = await query(
        "SELECT id, is_duplicate FROM clicks WHERE program_id = :program AND visitor_id LIKE :run",
        program=seeded.program_id,
        run=f"{run}-%",
    )
    assert {str(row.id) for row in stored} == acknowledged
    assert len(stored) == CLICKS
    assert not any(row.is_duplicate for row in stored)
    # Both replicas read the same numbers: nothing is counted in one process's memory.
    window = {"from": answers[0].json()["occurred_at"][:10] + "T00:00:00Z"}
    summaries = []
    for client in replicas.clients:
        response = await client.get(
            f"/v1/programs/{seeded.program_id}/metrics/summary",
            params=window,
            headers=auth(seeded.secret_key),
        )
        assert response.status_code == 200, response.text
        summaries.append({k: v for k, v in response.json().items() if k != "to"})
    assert summaries[0] == summaries[1]
    [(clicks,)] = await query(
        "SELECT count(*) FROM clicks WHERE program_id = :program", program=seeded.program_id
    )
    assert summaries[0]["clicks"] == clicks


async def test_a_request_holds_one_pooled_connection_at_a_time() -> None:
    """With a pool of one connection every kind of request still answers: none takes a second
    connection while it holds the first (a burst of such requests would deadlock the pool).
    This is what lets `database_pool_size` be sized per replica, and PgBouncer's pool with it.
    Each request uses a key never used before, so its last_used_at is written too."""
    settings = settings_for_tests(database_pool_size=1, database_pool_timeout_seconds=2)
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        AsyncClient(transport=ASGITransport(app=application), base_url="http://test") as http,
    ):
        program = await make_program(http, await make_key(application))
        program_ids = [UUID(program["id"])]

        async def fresh(kind: str) -> dict[str, str]:
            return auth(await make_key(application, kind, program_ids)) | {"User-Agent": BROWSER_UA}

        referrer = await http.post(
            f"/v1/programs/{program['id']}/referrers",
            json={"external_id": "one-connection"},
            headers=await fresh("admin"),
        )
        assert referrer.status_code == 201, referrer.text
        code = referrer.json()["default_code"]["code"]
        conversion = {
            "program_id": program["id"],
            "event_id": "one-connection-order",
            "customer_id": "one-connection-customer",
            "amount": "12.00",
            "currency": "USD",
        }
        posts = [
            # path, body, key kind, with an Idempotency-Key?, the answer
            ("/v1/clicks", {"code": code}, "publishable", False, 201),  # group commit
            ("/v1/clicks", {"code": code}, "publishable", True, 201),  # in the request
            (
                "/v1/redemptions",
                {"code": code, "customer_id": "one-connection-customer"},
                "publishable",
                True,
                201,
            ),
            ("/v1/conversions", conversion, "secret", True, 201),
            ("/v1/conversions", conversion, "secret", False, 200),  # a retry
        ]
        for n, (path, body, kind, keyed, status) in enumerate(posts):
            headers = await fresh(kind)
            if keyed:
                headers["Idempotency-Key"] = f"one-connection-{n}"
            response = await http.post(path, json=body, headers=headers)
            assert response.status_code == status, (path, response.text)
        for path in (
            f"/v1/programs/{program['id']}/metrics/summary",
            "/v1/conversions?format=csv",
            "/readyz",
        ):
            response = await http.get(path, headers=await fresh("secret"))
            assert response.status_code == 200, (path, response.text)
