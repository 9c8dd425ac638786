"""The load scenarios and their seed: programs, rules and keys through the API, codes by COPY.

Each run starts from a clean slate: what earlier runs' scenarios wrote is purged first (the
generated metrics data set stays), then every scenario gets its own program, so its rows can be
counted apart from the others'.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench import dataset
from bench.config import BIN, DSN, KEY_PREFIX, ROOT, SCENARIO_PREFIX, SERVICE_ENV
from bench.console import log
from bench.database import BUSY_SESSIONS, Monitor

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
# Rows of a scenario's program per table, and "busy": database sessions inside a transaction.
RowCounts = dict[str, int]


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One path under load: the wrk script that drives it and how its stored rows are counted."""

    name: str
    path: str
    script: str  # in bench/wrk/
    program_id: str
    args: tuple[str, ...]  # the script's arguments; the run adds a last one of its own
    success: str  # the status that means "stored"
    count: Callable[[], RowCounts]  # the first table is the one the answers are checked against


@dataclass(frozen=True)
class Seed:
    """What the scenarios need from the database, set up once per run."""

    admin_key: str
    programs: dict[str, str]  # scenario name -> program id
    keys: dict[str, str]  # "publishable" (the widget's), "secret" (the merchant backend's)
    codes: dict[str, list[str]]  # program id -> its codes


def cli_key(kind: str, name: str, programs: list[str]) -> str:
    """A key made with the service's CLI, as an operator would make the first one."""
    command = [str(BIN / "referral-service"), "keys", "create", "--kind", kind, "--name", name]
    for program in programs:
        command += ["--program", program]
    out = subprocess.run(
        command,
        env={**os.environ, **SERVICE_ENV},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"keys create failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1].strip()


def admin_key() -> str:
    return cli_key("admin", KEY_PREFIX + "admin", [])


async def create_programs(admin_key: str) -> tuple[dict[str, str], dict[str, str]]:
    """Programs, reward rules and keys through the API (in process, over ASGI), as a merchant
    would; returns the program ids and the widget (publishable) and backend (secret) keys."""
    from app.core.config import Settings
    from app.main import create_app

    settings = Settings(
        database_url=SERVICE_ENV["REFERRAL_DATABASE_URL"],
        environment="test",
        rate_limits_enabled=False,
        housekeeping_interval_seconds=0,
    )
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {admin_key}"}
    programs = {}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:
            for name in ("clicks", "redirect", "conversions"):
                answer = await client.post(
                    "/v1/programs",
                    json={
                        "name": SCENARIO_PREFIX + name,
                        "landing_url": "https://shop.example/landing",
                        "currency": "USD",
                        "referee_offer": "10 % off your first order",
                    },
                )
                answer.raise_for_status()
                programs[name] = answer.json()["id"]
            rules = [
                {
                    "name": "referrer: 10.00 per purchase",
                    "recipient": "referrer",
                    "kind": "fixed",
                    "amount": "10.00",
                    "currency": "USD",
                    "trigger": "every_purchase",
                },
                {
                    "name": "referee: 10 % of the first purchase",
                    "recipient": "referee",
                    "kind": "percent",
                    "percent": "10",
                    "trigger": "first_purchase",
                },
            ]
            for rule in rules:
                answer = await client.post(
                    f"/v1/programs/{programs['conversions']}/reward-rules", json=rule
                )
                if answer.status_code != 201:
                    raise RuntimeError(f"reward rule refused: {answer.status_code} {answer.text}")
            keys = {}
            for kind, program in (("publishable", "clicks"), ("secret", "conversions")):
                answer = await client.post(
                    "/v1/api-keys",
                    json={
                        "kind": kind,
                        "name": f"{KEY_PREFIX}{kind}",
                        "program_ids": [programs[program]],
                    },
                )
                if answer.status_code != 201:
                    raise RuntimeError(f"key refused: {answer.status_code} {answer.text}")
                keys[kind] = answer.json()["key"]
    finally:
        await app.state.engine.dispose()
    return programs, keys


async def insert_codes(program_ids: list[str], per_program: int) -> dict[str, list[str]]:
    """Referrers with one code each, by COPY: set-up, not what is measured."""
    rng = random.Random()
    now = datetime.now(UTC)
    codes: dict[str, list[str]] = {}
    conn = await asyncpg.connect(DSN)
    try:
        for program in program_ids:
            program_uuid = uuid.UUID(program)
            referrers, code_rows, texts = [], [], []
            for i in range(per_program):
                referrer_id = uuid.uuid4()
                text = "".join(rng.choice(CODE_ALPHABET) for _ in range(10))
                texts.append(text)
                referrers.append(
                    (referrer_id, now, program_uuid, f"bench-r{i:06d}", None, None, "{}")
                )
                code_rows.append(
                    (
                        uuid.uuid4(),
                        now,
                        program_uuid,
                        referrer_id,
                        text,
                        text,
                        True,
                        False,
                        False,
                        None,
                        None,
                        0,
                    )
                )
            await conn.copy_records_to_table(
                "referrers",
                records=referrers,
                columns=[
                    "id",
                    "created_at",
                    "program_id",
                    "external_id",
                    "email",
                    "name",
                    "metadata",
                ],
            )
            await conn.copy_records_to_table(
                "codes",
                records=code_rows,
                columns=[
                    "id",
                    "created_at",
                    "program_id",
                    "referrer_id",
                    "code",
                    "normalized",
                    "is_default",
                    "is_vanity",
                    "disabled",
                    "expires_at",
                    "max_redemptions",
                    "redemption_count",
                ],
            )
            codes[program] = texts
        await conn.execute("ANALYZE referrers; ANALYZE codes")
    finally:
        await conn.close()
    return codes


async def purge_scenarios() -> None:
    """Drop what earlier runs' scenarios wrote; the generated data sets stay."""
    conn = await asyncpg.connect(DSN)
    try:
        await dataset.ensure_marker_tables(conn)
        await dataset.restore_dropped_indexes(conn, log)
        old = [
            str(r[0])
            for r in await conn.fetch(
                "SELECT id FROM programs WHERE name LIKE $1", SCENARIO_PREFIX + "%"
            )
        ]
        await dataset.purge_programs(conn, old, lambda text: log(text.strip()))
        await conn.execute("DELETE FROM api_keys WHERE name LIKE $1", KEY_PREFIX + "%")
        await conn.execute("DROP TABLE IF EXISTS bench_click_ceiling")
        # Vacuum where the purge left many dead rows, so autovacuum does not wake mid-run.
        rows = await conn.fetch(
            """SELECT relname FROM pg_stat_user_tables
               WHERE n_dead_tup > 10000 AND n_dead_tup > 0.02 * greatest(n_live_tup, 1)"""
        )
        for row in rows:
            started = time.monotonic()
            await conn.execute(f'VACUUM (ANALYZE) "{row[0]}"')
            log(f"vacuumed {row[0]} in {time.monotonic() - started:.1f}s")
    finally:
        await conn.close()


async def seed(codes_per_program: int) -> Seed:
    """A clean slate, then the scenarios' programs, rules, keys and codes."""
    await purge_scenarios()
    key = admin_key()
    programs, keys = await create_programs(key)
    codes = await insert_codes(list(programs.values()), codes_per_program)
    return Seed(admin_key=key, programs=programs, keys=keys, codes=codes)


def zipf_file(directory: Path, name: str, codes: list[str], draws: int = 100_000) -> Path:
    """The codes in request order, popularity Zipf (s = 1): the first rank takes ~10 %."""
    rng = random.Random(7)
    ranked = codes[:]
    rng.shuffle(ranked)
    cumulative = dataset.zipf_cumulative(len(ranked), 1.0)
    path = directory / f"codes-{name}.txt"
    path.write_text("\n".join(rng.choices(ranked, cum_weights=cumulative, k=draws)) + "\n")
    return path


def row_counter(
    monitor: Monitor, program_id: str, tables: tuple[str, ...]
) -> Callable[[], RowCounts]:
    """Rows of the program per table, and `busy`: database sessions inside a transaction."""
    selects = ", ".join(
        f"(SELECT count(*) FROM {t} WHERE program_id = '{program_id}')" for t in tables
    )
    names = (*tables, "busy")

    def count() -> RowCounts:
        values = monitor.row(f"SELECT {selects}, {BUSY_SESSIONS}")
        return dict(zip(names, map(int, values), strict=True))

    return count


def build(seed: Seed, monitor: Monitor, scratch: Path) -> list[Scenario]:
    """Clicks, redirects and purchases, each on its own program; code lists in `scratch`."""
    programs = seed.programs

    def codes_file(name: str) -> str:
        return str(zipf_file(scratch, name, seed.codes[programs[name]]))

    # The run's own argument extends this tag, so event ids never repeat across runs.
    tag = f"b{int(time.time())}"
    return [
        Scenario(
            name="clicks",
            path="POST /v1/clicks",
            script="clicks.lua",
            program_id=programs["clicks"],
            args=(codes_file("clicks"), seed.keys["publishable"]),
            success="201",
            count=row_counter(monitor, programs["clicks"], ("clicks",)),
        ),
        Scenario(
            name="redirect",
            path="GET /r/{code}",
            script="redirect.lua",
            program_id=programs["redirect"],
            args=(codes_file("redirect"),),
            success="302",
            count=row_counter(monitor, programs["redirect"], ("clicks",)),
        ),
        Scenario(
            name="conversions",
            path="POST /v1/conversions",
            script="conversions.lua",
            program_id=programs["conversions"],
            args=(codes_file("conversions"), seed.keys["secret"], programs["conversions"], tag),
            success="201",
            count=row_counter(
                monitor, programs["conversions"], ("conversions", "rewards", "referrals")
            ),
        ),
    ]
