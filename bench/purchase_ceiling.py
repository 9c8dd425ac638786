"""The database ceiling for purchases: pgbench running, in one transaction, the statements the
service sends for one purchase (bench/pgbench/purchase.sql), on the conversions scenario's
program, its codes and its two rules.

The rows it writes are real purchases of that program (event ids `pgbench-<tag>-…`), counted
apart: the load run's check counts the rows its own run added.
"""

from __future__ import annotations

import time
from typing import Any

from bench.config import CONNECTIONS, PGBENCH_DIR
from bench.database import Monitor
from bench.runners import run_pgbench
from bench.sampling import CpuAccount

# Half the load generator's connections: as many as the service's two workers can have in
# flight; more only queue. And a run long enough that a new backend's first purchase (which
# compiles and plans the rollup triggers) does not dominate it.
CLIENTS = CONNECTIONS // 2
MIN_SECONDS = 8


def purchase_ceiling(
    monitor: Monitor, seconds: int, program_id: str, codes: list[str], cpu: CpuAccount
) -> dict[str, Any]:
    """pgbench purchases: throughput, latency, and the rows stored (two rewards each)."""
    clients = min(CLIENTS, monitor.available_connections() - 8)
    if clients < 8:
        return {"error": f"only {clients + 8} free Postgres connections; pgbench skipped"}
    monitor.execute(
        "CREATE TABLE IF NOT EXISTS bench_purchase_codes (n integer PRIMARY KEY, normalized text)"
    )
    monitor.execute("TRUNCATE bench_purchase_codes")
    monitor.fetch(
        "INSERT INTO bench_purchase_codes SELECT n, c FROM unnest($1::text[]) "
        "WITH ORDINALITY AS u (c, n) RETURNING n",
        [code.upper() for code in codes],
    )
    rules = {
        row["recipient"]: str(row["id"])
        for row in monitor.fetch(
            "SELECT id, recipient FROM reward_rules WHERE program_id = $1 AND active",
            program_id,
        )
    }
    tag = f"p{int(time.time())}"
    pattern = f"pgbench-{tag}-%"

    def stored() -> int:
        return int(
            monitor.fetch(
                "SELECT count(*) AS n FROM conversions WHERE program_id = $1 AND event_id LIKE $2",
                program_id,
                pattern,
            )[0]["n"]
        )

    result = run_pgbench(
        PGBENCH_DIR / "purchase.sql",
        {
            "program": program_id,
            "ncodes": str(len(codes)),
            "tag": tag,
            "rule_referrer": rules["referrer"],
            "rule_referee": rules["referee"],
        },
        max(seconds, MIN_SECONDS),
        clients,
        stored,
        cpu,
    )
    if "error" not in result:
        rewards = monitor.fetch(
            "SELECT count(*) AS n FROM rewards w JOIN conversions v ON v.id = w.conversion_id "
            "WHERE v.program_id = $1 AND v.event_id LIKE $2",
            program_id,
            pattern,
        )[0]["n"]
        result["rewards"] = int(rewards)
    return result
