"""Loading a metrics data set into one program of the bench database with COPY.

Restartable: a finished load is recorded in `bench_datasets` with its parameters; the same
parameters again are a no-op, other parameters (or an unfinished load) purge and reload that
data set. Secondary indexes are dropped and rebuilt around a load that is bigger than what the
table holds, and their definitions are saved first, so an interrupted load never loses one.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.dataset.rows import COLUMNS, TABLE_NO, Generator, Params, uid

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/referral_bench"
CLICK_STREAMS = 2  # this machine has two cores
LOAD_TABLES = ("referrers", "codes", "clicks", "referrals", "conversions", "rewards")
# Kept by triggers, which COPY with session_replication_role = replica does not fire.
ROLLUP_TABLES = ("metrics_program_rollups", "metrics_channel_rollups", "metrics_referrer_rollups")


async def ensure_marker_tables(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS bench_datasets (
            name text PRIMARY KEY, params jsonb NOT NULL, program_id uuid NOT NULL,
            starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
            complete boolean NOT NULL DEFAULT false, loaded_at timestamptz,
            load_seconds double precision);
        CREATE TABLE IF NOT EXISTS bench_dropped_indexes (
            name text PRIMARY KEY, definition text NOT NULL);
        """
    )


async def restore_dropped_indexes(conn: asyncpg.Connection, log: Callable[[str], None]) -> None:
    """Indexes an interrupted load dropped come back before anything else happens."""
    for name, definition in await conn.fetch("SELECT name, definition FROM bench_dropped_indexes"):
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{name}")
        if not exists:
            log(f"  restoring index {name} dropped by an interrupted load")
            await conn.execute(definition)
        await conn.execute("DELETE FROM bench_dropped_indexes WHERE name = $1", name)


async def purge_programs(
    conn: asyncpg.Connection, program_ids: list[str], log: Callable[[str], None]
) -> None:
    """Delete every row of these programs, in every table, whatever the schema has grown into.

    Tables with a program_id column lose those rows; then rows whose foreign key points at a
    deleted row go too, until nothing dangles. Foreign-key triggers are off meanwhile
    (session_replication_role), which is what makes the order free.
    """
    if not program_ids:
        return
    started = time.monotonic()
    tables = [
        r["table_name"]
        for r in await conn.fetch(
            """SELECT table_name FROM information_schema.columns
               WHERE table_schema = 'public' AND column_name = 'program_id'
                 AND table_name NOT LIKE 'bench\\_%' AND table_name <> 'programs'"""
        )
    ]
    fks = await conn.fetch(
        """SELECT c.conrelid::regclass::text AS child, a.attname AS column,
                  c.confrelid::regclass::text AS parent, af.attname AS parent_column
           FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
           JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]
           WHERE c.contype = 'f' AND array_length(c.conkey, 1) = 1
             AND c.connamespace = 'public'::regnamespace"""
    )
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        touched: set[str] = set()
        for table in tables:
            status = await conn.execute(
                f'DELETE FROM "{table}" WHERE program_id = ANY($1::uuid[])', program_ids
            )
            if status != "DELETE 0":
                touched.add(table)
        await conn.execute("DELETE FROM programs WHERE id = ANY($1::uuid[])", program_ids)
        touched.add("programs")
        # Children of deleted rows that carry no program_id (refunds, rule versions, ...).
        for _ in range(5):
            progressed = False
            for fk in fks:
                if fk["parent"] not in touched or fk["child"] in tables:
                    continue
                child, column = fk["child"], fk["column"]
                parent, parent_column = fk["parent"], fk["parent_column"]
                status = await conn.execute(
                    f'DELETE FROM {child} t WHERE t."{column}" IS NOT NULL AND NOT EXISTS'
                    f' (SELECT 1 FROM {parent} p WHERE p."{parent_column}" = t."{column}")'
                )
                if status != "DELETE 0":
                    touched.add(fk["child"])
                    progressed = True
            if not progressed:
                break
    log(f"  purged {len(program_ids)} program(s) in {time.monotonic() - started:.1f}s")


class Loader:
    """COPY through psql: the fastest way in, and one process per stream."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def copy(self, table: str, chunks: Iterator[str] | list[str]) -> int:
        """Stream CSV chunks through `psql COPY FROM STDIN`; FK triggers off for this session."""
        command = [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            self.dsn,
            "-c",
            "SET session_replication_role = replica",
            "-c",
            "SET synchronous_commit = off",
            "-c",
            f"COPY {table} ({COLUMNS[table]}) FROM STDIN WITH (FORMAT csv)",
        ]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        rows = 0
        try:
            for chunk in chunks:
                rows += chunk.count("\n")
                proc.stdin.write(chunk.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        if proc.wait(timeout=600) != 0:
            raise RuntimeError(f"COPY into {table} failed (psql exit {proc.returncode})")
        return rows


def _copy_click_stream(
    loader: Loader, generator: Generator, stream: int, streams: int, results: Any
) -> None:
    try:
        results.put((stream, loader.copy("clicks", generator.clicks(stream, streams)), None))
    except BaseException as exc:  # reported to the parent, which fails the load
        results.put((stream, 0, repr(exc)))


def copy_clicks_in_parallel(loader: Loader, generator: Generator, streams: int) -> int:
    """Generate and COPY the clicks in `streams` forked processes (one core each)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_copy_click_stream, args=(loader, generator, n, streams, results))
        for n in range(streams)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    errors = [error for _, _, error in outcomes if error]
    if errors:
        raise RuntimeError(f"click COPY failed: {errors}")
    return sum(rows for _, rows, _ in outcomes)


async def secondary_indexes(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    """Indexes that back no constraint: safe to drop and rebuild from their definition."""
    rows = await conn.fetch(
        """SELECT i.relname, pg_get_indexdef(x.indexrelid)
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
           WHERE x.indrelid = $1::regclass
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)""",
        table,
    )
    return [(r[0], r[1]) for r in rows]


async def ensure_dataset(
    dsn: str, name: str, params: Params, log: Callable[[str], None] = print, force: bool = False
) -> dict[str, Any]:
    """The data set `name` with `params`, loaded now or found from an earlier run."""
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_marker_tables(conn)
        await restore_dropped_indexes(conn, log)
        wanted = json.dumps(asdict(params), sort_keys=True)
        row = await conn.fetchrow("SELECT * FROM bench_datasets WHERE name = $1", name)
        if (
            row is not None
            and row["complete"]
            and json.dumps(json.loads(row["params"]), sort_keys=True) == wanted
            and not force
            and await conn.fetchval(
                "SELECT count(*) FROM programs WHERE id = $1", row["program_id"]
            )
        ):
            log(f"  data set '{name}' already loaded ({row['loaded_at']:%Y-%m-%d %H:%M}); skipping")
            return _info(row, loaded_now=False)
        if row is not None:
            log(f"  data set '{name}' is stale or incomplete: purging it")
            await purge_programs(conn, [str(row["program_id"])], log)
            await conn.execute("DELETE FROM bench_datasets WHERE name = $1", name)

        started = time.monotonic()
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        generator = Generator(name, params, end)
        # An earlier crashed load may have left the program row behind under this id.
        await purge_programs(conn, [generator.program_id], lambda _: None)
        await conn.execute(
            """INSERT INTO bench_datasets (name, params, program_id, starts_at, ends_at)
               VALUES ($1, $2::jsonb, $3, $4, $5)""",
            name,
            wanted,
            generator.program_id,
            generator.start,
            end,
        )
        await _insert_program(conn, generator)

        # Drop secondary indexes where the load dwarfs the table: rebuilding is much faster.
        sizes = {
            "referrers": params.referrers,
            "codes": params.referrers,
            "clicks": params.clicks,
            "referrals": params.referrals,
            "conversions": params.conversions,
            "rewards": params.conversions * 2,
        }
        dropped: list[tuple[str, str]] = []
        for table in LOAD_TABLES:
            existing = await conn.fetchval(
                "SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = $1::regclass", table
            )
            if sizes[table] >= 200_000 and sizes[table] > existing:
                for index_name, definition in await secondary_indexes(conn, table):
                    await conn.execute(
                        "INSERT INTO bench_dropped_indexes VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        index_name,
                        definition,
                    )
                    await conn.execute(f'DROP INDEX "{index_name}"')
                    dropped.append((index_name, definition))
        if dropped:
            log(f"  dropped {len(dropped)} secondary indexes for the load")

        loader = Loader(dsn)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("referrers", generator.referrers),
            ("codes", generator.codes),
            ("referrals", generator.referrals),
        ]
        for table, make in steps:
            t0 = time.monotonic()
            rows = loader.copy(table, make())
            log(f"  {table}: {rows:,} rows in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        rows = copy_clicks_in_parallel(loader, generator, streams=CLICK_STREAMS)
        log(f"  clicks: {rows:,} rows in {time.monotonic() - t0:.1f}s ({CLICK_STREAMS} streams)")
        t0 = time.monotonic()
        conversions, rewards = generator.conversions_and_rewards()
        rows = loader.copy("conversions", iter(["".join(conversions)]))
        log(f"  conversions: {rows:,} rows in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        rows = loader.copy("rewards", iter(["".join(rewards)]))
        log(f"  rewards: {rows:,} rows in {time.monotonic() - t0:.1f}s")

        if dropped:
            t0 = time.monotonic()
            await conn.execute("SET maintenance_work_mem = '1GB'")
            await conn.execute("SET max_parallel_maintenance_workers = 2")
            for index_name, definition in dropped:
                await conn.execute(definition)
                await conn.execute("DELETE FROM bench_dropped_indexes WHERE name = $1", index_name)
            log(f"  rebuilt {len(dropped)} indexes in {time.monotonic() - t0:.1f}s")
        # COPY ran with triggers off (session_replication_role): sum the metrics rollups now.
        rollups = await rebuild_rollups(conn, generator.program_id, log)
        t0 = time.monotonic()
        # Visibility map set (index-only scans) and no autovacuum of fresh rows mid-benchmark.
        for table in ("programs", "reward_rules", *LOAD_TABLES, *rollups):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        t1 = time.monotonic()
        await conn.execute("CHECKPOINT")
        log(f"  vacuum analyze {t1 - t0:.1f}s, checkpoint {time.monotonic() - t1:.1f}s")
        seconds = time.monotonic() - started
        row = await conn.fetchrow(
            """UPDATE bench_datasets SET complete = true, loaded_at = now(), load_seconds = $2
               WHERE name = $1 RETURNING *""",
            name,
            seconds,
        )
        log(f"  data set '{name}' loaded in {seconds:.0f}s")
        return _info(row, loaded_now=True)
    finally:
        await conn.close()


async def rebuild_rollups(
    conn: asyncpg.Connection, program_id: str, log: Callable[[str], None]
) -> tuple[str, ...]:
    """Recount the program's metrics rollups from its rows; the rollup tables (none if the
    schema predates them)."""
    if not await conn.fetchval("SELECT to_regprocedure('metrics_rollups_rebuild(uuid)')"):
        return ()
    t0 = time.monotonic()
    await conn.execute("SELECT metrics_rollups_rebuild($1::uuid)", program_id)
    log(f"  metrics rollups rebuilt in {time.monotonic() - t0:.1f}s")
    return ROLLUP_TABLES


def _info(row: asyncpg.Record, loaded_now: bool) -> dict[str, Any]:
    return {
        "name": row["name"],
        "params": json.loads(row["params"]),
        "program_id": str(row["program_id"]),
        "starts_at": row["starts_at"].isoformat(),
        "ends_at": row["ends_at"].isoformat(),
        "loaded_now": loaded_now,
        "load_seconds": row["load_seconds"],
        "loaded_at": row["loaded_at"].isoformat() if row["loaded_at"] else None,
    }


async def _insert_program(conn: asyncpg.Connection, g: Generator) -> None:
    created = g.start
    await conn.execute(
        """INSERT INTO programs (id, created_at, updated_at, name, landing_url, attribution_model,
               attribution_window_days, status, currency, referee_offer, allowed_origins)
           VALUES ($1, $2, $2, $3, 'https://shop.example/welcome', 'last_touch', 30, 'active',
                   'USD', '10 % off your first order', '[]')""",
        g.program_id,
        created,
        f"bench data set {g.name}",
    )
    rules = [
        (g.rule_referrer, "referrer pays 10.00", "referrer", "fixed", "10", None, "every_purchase"),
        (g.rule_referee, "referee gets 10 %", "referee", "percent", None, "10", "first_purchase"),
    ]
    for number, (rule_id, rule_name, recipient, kind, amount, percent, trigger) in enumerate(rules):
        await conn.execute(
            """INSERT INTO reward_rules (id, created_at, updated_at, program_id, version, active,
                   name, recipient, kind, amount, percent, points, currency, trigger,
                   min_order_amount, tiers, max_rewards_per_referrer, hold_days)
               VALUES ($1, $2, $2, $3, 1, true, $4, $5, $6, $7::numeric, $8::numeric, NULL,
                       'USD', $9, NULL, '[]', NULL, 14)""",
            rule_id,
            created,
            g.program_id,
            rule_name,
            recipient,
            kind,
            amount,
            percent,
            trigger,
        )
        snapshot = {
            "name": rule_name,
            "recipient": recipient,
            "kind": kind,
            "amount": amount,
            "percent": percent,
            "currency": "USD",
            "trigger": trigger,
            "hold_days": 14,
        }
        await conn.execute(
            """INSERT INTO reward_rule_versions (id, created_at, rule_id, version, snapshot)
               VALUES ($1, $2, $3, 1, $4::json)""",
            uid(g.tag, TABLE_NO["rule_version"], number),
            created,
            rule_id,
            json.dumps(snapshot),
        )
