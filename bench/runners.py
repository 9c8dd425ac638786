"""Load runs: wrk against a scenario or the bare app, pgbench for the database ceiling.

Every run returns one plain dict (JSON as it lands in latest.json): throughput, latency,
answers by status, CPU per request, RSS, and the check of answers against rows stored.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import medians
from bench.config import (
    CONNECTIONS,
    DATABASE,
    LOGS,
    PG_HOST,
    PG_PORT,
    PG_USER,
    PGBENCH_DIR,
    WRK_DIR,
    WRK_THREADS,
    Mode,
)
from bench.console import log
from bench.database import SESSIONS_OPENED, Monitor
from bench.sampling import CpuAccount, RssSampler, per_request
from bench.scenarios import RowCounts, Scenario
from bench.server import Server, Service
from bench.stats import percentile

# Every wrk run of the benchmark gets the next number, at the end of its last argument: the
# scripts make their visitors and event ids from it, so no run repeats another's.
RUN_NUMBERS = itertools.count(1)


def run_label(phase: str, server: Service) -> str:
    """The last argument of a wrk run: e.g. "run-service-2w-7"."""
    return f"{phase}-{server.name}-{next(RUN_NUMBERS)}"


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    url: str,
    script: str,
    args: list[str],
    seconds: int,
    connections: int = CONNECTIONS,
    threads: int = WRK_THREADS,
) -> dict[str, Any]:
    """One wrk run; the JSON summary its script prints (bench/wrk/common.lua), and the
    figures of wrk's own text under `wrk_text`."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(WRK_DIR / script),
        url,
        "--",
        *args,
    ]
    # wrk has exited before the CPU sampling looks at /proc again: its CPU comes from the
    # rusage of waited-for children instead (the bench runs one child at a time).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    marker = [line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if out.returncode != 0 or not marker:
        raise RuntimeError(
            f"wrk failed ({out.returncode}): {out.stderr.strip()}\n{out.stdout[-2000:]}"
        )
    result: dict[str, Any] = json.loads(marker[-1][len("BENCH_JSON ") :])
    text: dict[str, Any] = {}
    if match := re.search(r"Requests/sec:\s+([\d.]+)", out.stdout):
        text["requests_per_s"] = float(match[1])
    for percent in ("50", "99"):
        if match := re.search(rf"^\s+{percent}%\s+(\S+)", out.stdout, re.M):
            text[f"p{percent}_ms"] = parse_duration_ms(match[1])
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout):
        text["non_2xx_3xx"] = int(match[1])
    result["wrk_text"] = text
    result["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    return result


def with_load_generator(noise: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The run's noise with wrk's CPU share of the machine filled in (see run_wrk)."""
    capacity = (os.cpu_count() or 1) * run["duration_s"]
    noise["load_generator_cpu_s"] = run["cpu_s"]
    if "shares" in noise:
        noise["shares"]["load_generator"] = round(run["cpu_s"] / capacity, 3)
    return noise


PERCENTILES = ("50", "95", "99")


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def wait_until_stable(
    count: Callable[[], RowCounts], stable_for: float, limit: float = 30
) -> RowCounts:
    """Requests the load generator dropped at its end have finished: no session is inside a
    transaction and the row counts have not moved for `stable_for` seconds (at most `limit`)."""
    deadline = time.monotonic() + limit
    last = count()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(stable_for / 2)
        current = count()
        if current != last or current["busy"]:
            last, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since >= stable_for:
            break
    else:
        log(f"    (the server did not settle within {limit:.0f}s: {last})")
    last.pop("busy")
    return last


def run_pgbench(
    script: Path,
    variables: dict[str, str],
    seconds: int,
    clients: int,
    stored: Callable[[], int],
    cpu: CpuAccount,
) -> dict[str, Any]:
    """pgbench running `script` (prepared statements, one transaction per run of it) on the
    bench database; `stored` counts the rows it left, to check against its transactions."""
    defines = [arg for name, value in variables.items() for arg in ("-D", f"{name}={value}")]
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as scratch:
        before = cpu.snapshot()
        started = time.monotonic()
        out = subprocess.run(
            [
                "pgbench",
                "-h",
                PG_HOST,
                "-p",
                str(PG_PORT),
                "-U",
                PG_USER,
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                str(script),
                *defines,
                "-l",
                "--log-prefix",
                f"{scratch}/tx",
                DATABASE,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        noise = cpu.measure(before, time.monotonic() - started)
        if out.returncode != 0:
            return {"error": f"pgbench failed: {out.stderr.strip()[-800:]}"}
        latencies = []
        for path in Path(scratch).glob("tx*"):
            for line in path.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]) / 1000.0)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    processed = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if tps is None or processed is None:
        return {"error": f"pgbench printed no summary: {out.stdout.strip()[-800:]}"}
    latencies.sort()
    return {
        "clients": clients,
        "requests_per_s": float(tps[1]),
        "transactions": int(processed[1]),
        "failed": int(failed[1]) if failed else 0,
        "stored": stored(),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "noise": noise,
    }


def click_ceiling(
    monitor: Monitor, seconds: int, program_id: str, codes: int, cpu: CpuAccount
) -> dict[str, Any]:
    """The database ceiling for clicks: single-row INSERTs into a click-shaped table."""
    monitor.execute(
        "CREATE TABLE IF NOT EXISTS bench_click_ceiling"
        " (LIKE clicks INCLUDING DEFAULTS INCLUDING INDEXES)"
    )
    monitor.execute("TRUNCATE bench_click_ceiling")
    clients = min(CONNECTIONS, monitor.available_connections() - 8)
    if clients < 8:
        return {"error": f"only {clients + 8} free Postgres connections; pgbench skipped"}
    return run_pgbench(
        PGBENCH_DIR / "insert_click.sql",
        {"program": program_id, "ncodes": str(codes)},
        seconds,
        clients,
        lambda: int(monitor.value("SELECT count(*) FROM bench_click_ceiling")),
        cpu,
    )


def bare_run(workers: int, mode: Mode, cpu: CpuAccount) -> dict[str, Any]:
    """The framework ceiling: the bare FastAPI app with `workers` workers under wrk, one
    warm-up and `mode.runs` measured runs; their medians, each run under `runs`."""
    server = Server.bare(workers)
    try:
        server.wait_ready("/ping")
        log(
            f"  bare FastAPI, {workers} worker(s): warm-up {mode.warmup}s, "
            f"{mode.runs} runs of {mode.seconds}s"
        )
        run_wrk(server.url, "bare.lua", [], mode.warmup)
        return medians.repeated(mode.runs, lambda _: bare_once(server, mode, cpu))
    finally:
        server.stop(LOGS / f"bare-{workers}w.log")


def bare_once(server: Server, mode: Mode, cpu: CpuAccount) -> dict[str, Any]:
    snapshot = cpu.snapshot()
    with RssSampler(server.worker_pids()) as rss:
        run = run_wrk(server.url, "bare.lua", [], mode.seconds)
    noise = with_load_generator(cpu.measure(snapshot, run["duration_s"], server.all_pids()), run)
    statuses = {k: int(v) for k, v in run["statuses"].items()}
    pct = run["latency_ms"]["percentiles"]
    return {
        "workers": server.workers,
        "requests_per_s": round(statuses.get("200", 0) / run["duration_s"], 1),
        "p50_ms": round(pct["50"], 2),
        "p95_ms": round(pct["95"], 2),
        "p99_ms": round(pct["99"], 2),
        "statuses": statuses,
        "socket_errors": {k: v for k, v in run["errors"].items() if v},
        "max_rss_mb": rss.max_mb(),
        "cpu_ms_per_request": per_request(noise, run["requests"]),
        "noise": noise,
    }


def load_run(
    scenario: Scenario, server: Service, mode: Mode, cpu: CpuAccount, monitor: Monitor
) -> dict[str, Any]:
    """Warm-up and measured run of one scenario; then the answers that mean "stored" are
    checked against the rows the scenario's program gained."""
    log(f"  {scenario.name}, {server.name}: warm-up {mode.warmup}s, run {mode.seconds}s")
    # The program's rows before its warm-up: the check below covers warm-up and run together,
    # so no wait for the warm-up's cut-off requests is needed between the two.
    before = scenario.count()
    before.pop("busy")
    whole, whole_started = cpu.snapshot(), time.monotonic()
    sessions_before = int(monitor.value(SESSIONS_OPENED))
    warm = run_wrk(
        server.url, scenario.script, [*scenario.args, run_label("warmup", server)], mode.warmup
    )
    # No answer at all is a slow service (measured next); answers without a success are a bug.
    if warm["statuses"] and scenario.success not in warm["statuses"]:
        raise RuntimeError(
            f"{scenario.name}: warm-up got no {scenario.success}, only "
            f"{warm['statuses']}; server output ends with:\n{server.log_tail(5)}"
        )
    snapshot = cpu.snapshot()
    with RssSampler(server.worker_pids()) as rss:
        run = run_wrk(
            server.url, scenario.script, [*scenario.args, run_label("run", server)], mode.seconds
        )
    noise = with_load_generator(cpu.measure(snapshot, run["duration_s"], server.all_pids()), run)
    after = wait_until_stable(scenario.count, mode.stable_seconds)
    work = cpu.measure(whole, time.monotonic() - whole_started, server.all_pids())
    # New database connections while it ran: a pool that churns pays for a backend each time.
    sessions_opened = int(monitor.value(SESSIONS_OPENED)) - sessions_before
    stored = {table: after[table] - before[table] for table in after}
    statuses = {k: int(v) for k, v in run["statuses"].items()}
    warm_statuses = {k: int(v) for k, v in warm["statuses"].items()}
    duration = run["duration_s"]
    run_acked = statuses.get(scenario.success, 0)
    acked = run_acked + warm_statuses.get(scenario.success, 0)
    main_table = next(iter(stored))
    # Stored without an answer: requests in flight when wrk stopped (one per connection at most,
    # at the end of the warm-up and of the run) and requests wrk gave up on (timeouts) that the
    # server still completed.
    unanswered = stored[main_table] - acked
    allowed = 2 * CONNECTIONS + sum(
        r["errors"].get(kind, 0) for r in (warm, run) for kind in ("timeout", "read")
    )
    check: dict[str, Any] = {
        "acked": acked,
        "acked_in_run": run_acked,
        "stored": stored[main_table],
        "lost": max(0, acked - stored[main_table]),
        "stored_unanswered": max(0, unanswered),
        "unanswered_allowed": allowed,
        "ok": 0 <= unanswered <= allowed,
    }
    unexpected = {k: v for k, v in statuses.items() if k not in (scenario.success, "200")}
    if scenario.name == "conversions":
        check["replays_sent"] = int(run.get("replays", 0)) + int(warm.get("replays", 0))
        check["replays_answered_200"] = statuses.get("200", 0) + warm_statuses.get("200", 0)
        check["rewards"] = stored["rewards"]
        check["referrals"] = stored["referrals"]
        # Each new customer's purchase through a code pays both rules once and makes one referral.
        check["rewards_ok"] = stored["rewards"] == 2 * stored["conversions"]
        check["referrals_ok"] = stored["referrals"] == stored["conversions"]
        check["ok"] = check["ok"] and check["rewards_ok"] and check["referrals_ok"]
    elif "200" in statuses:
        unexpected["200"] = statuses["200"]
    errors = {k: v for k, v in run["errors"].items() if v}
    # No answer in the run: no latency was measured (wrk reports 0), not a fast one.
    pct = run["latency_ms"]["percentiles"] if run["requests"] else dict.fromkeys(PERCENTILES, None)
    return {
        "scenario": scenario.name,
        "path": scenario.path,
        "service": server.name,
        "workers": server.workers,
        "duration_s": round(duration, 2),
        "requests": run["requests"],
        "requests_per_s_all": round(run["requests"] / duration, 1),
        "requests_per_s": round(run_acked / duration, 1),  # stored-and-acknowledged per second
        "p50_ms": rounded(pct["50"]),
        "p95_ms": rounded(pct["95"]),
        "p99_ms": rounded(pct["99"]),
        "max_ms": round(run["latency_ms"]["max"], 2),
        "statuses": statuses,
        "unexpected_statuses": unexpected,
        "socket_errors": errors,
        "check": check,
        "max_rss_mb": rss.max_mb(),
        "rss_mb_per_worker": rss.mb_per_worker(),
        # Over warm-up, run and settling, per request the server handled (stored or answered
        # otherwise): wrk's count misses the requests that were still running when it stopped.
        "cpu_ms_per_request": per_request(
            work,
            stored[main_table]
            + sum(unexpected.values())
            + sum(v for k, v in warm_statuses.items() if k not in (scenario.success, "200"))
            + check.get("replays_answered_200", 0),
        ),
        "db_sessions_opened": sessions_opened,
        "noise": noise,
        "wrk_text": run["wrk_text"],
    }
