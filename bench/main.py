"""One benchmark run, phase by phase: set-up, ceilings, load runs, metrics, report.

`measure` is the measurements into one results dict; `main` wraps it with the set-up
before and the verdicts and files after. Every ceiling and every scenario runs `Mode.runs`
times (three) against the same server, the scenarios taking turns; the results carry the
medians, each run under `runs` (bench/medians.py). After the service with 1 and 2 workers
comes the scale-out phase: 1 and 2 replicas behind a local HAProxy (bench/balancer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import dataset, medians, report, scenarios
from bench.balancer import Cluster
from bench.config import (
    DSN,
    LOGS,
    RESULTS,
    ROOT,
    SERVICE_ENV,
    UVICORN_FLAGS,
    Config,
    parse_args,
    server_settings,
)
from bench.console import log
from bench.database import Monitor, ensure_database, monitoring
from bench.machine import ensure_tools, git_state, machine_info, wait_for_quiet
from bench.metrics import metrics_phase
from bench.purchase_ceiling import purchase_ceiling
from bench.runners import bare_run, click_ceiling, load_run
from bench.sampling import CpuAccount
from bench.scenarios import Scenario, Seed
from bench.server import Server, Service
from bench.targets import evaluate, metric_targets


class Phases:
    """Seconds per phase, in the order they ran (latest.json's `phases_s`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.monotonic()

    def done(self, name: str) -> None:
        """The phase that began at the previous mark ends now."""
        now = time.monotonic()
        self.seconds[name] = round(now - self._mark, 1)
        self._mark = now

    @contextlib.contextmanager
    def within(self, name: str) -> Iterator[None]:
        """A phase inside the current one (the metrics, inside the last load runs)."""
        began = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - began, 1)


def header(config: Config, monitor: Monitor) -> dict[str, Any]:
    """The first keys of the results: when, what, where."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": config.mode.name,
        "command": config.command,
        "git": git_state(),
        "machine": machine_info(monitor),
    }


def run_scenarios(
    service: Service,
    load: list[Scenario],
    config: Config,
    cpu: CpuAccount,
    monitor: Monitor,
    results: dict[str, Any],
    into: str = "load",
) -> None:
    """Every scenario against one service, `runs` times, the scenarios taking turns; the
    medians of each scenario's runs into `results[into]`. A failed run is recorded and the next
    one runs."""
    runs: dict[str, list[dict[str, Any]]] = {scenario.name: [] for scenario in load}
    cluster = service if isinstance(service, Cluster) else None
    for run in range(1, config.mode.runs + 1):
        for scenario in load:
            taken_out = cluster.replicas_taken_out() if cluster else 0
            try:
                row = load_run(scenario, service, config.mode, cpu, monitor)
            except Exception as exc:  # one broken run must not hide the others
                log(f"  {scenario.name}: FAILED: {exc}")
                results["failures"].append(
                    {
                        "scenario": scenario.name,
                        "service": service.name,
                        "workers": service.workers,
                        "run": run,
                        "error": str(exc)[:2000],
                    }
                )
                continue
            if cluster:
                # A replica the health checks took out: its share of the load got 503s.
                row["replicas_taken_out"] = cluster.replicas_taken_out() - taken_out
            runs[scenario.name].append(row)
            log(
                f"    run {run}: {row['requests_per_s']} req/s stored, "
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                f"check {'ok' if row['check']['ok'] else 'FAILED'} {row['check']}, "
                f"other answers {row['unexpected_statuses']}, RSS {row['max_rss_mb']} MB, "
                f"others' CPU {row['noise']['others_share']:.0%}"
            )
    for scenario in load:
        if not runs[scenario.name]:
            continue
        row = medians.median_row(runs[scenario.name])
        if cluster:
            row["replicas"] = cluster.replicas
            row["workers_per_replica"] = cluster.workers_per_replica
            counts = [r["replicas_taken_out"] for r in runs[scenario.name]]
            row["replicas_taken_out"] = sum(counts)
            for summary, count in zip(row["runs"], counts, strict=True):
                summary["replicas_taken_out"] = count
        results[into].append(row)
        log(
            f"  {scenario.name}, {service.name}, median of {len(runs[scenario.name])}: "
            f"{row['requests_per_s']} req/s, p99 {row['p99_ms']} ms"
        )


def measure(
    config: Config,
    monitor: Monitor,
    seed: Seed,
    load: list[Scenario],
    results: dict[str, Any],
    phases: Phases,
) -> None:
    """The database ceiling; per worker count the framework ceiling and the service under
    every scenario, the metrics phase on the largest worker count; then per replica count the
    replicas behind HAProxy under every scenario."""
    mode, cpu = config.mode, CpuAccount()
    log(f"database ceiling: pgbench, {mode.runs} runs of {mode.pgbench_seconds}s")
    results["ceilings"]["pgbench"] = medians.repeated(
        mode.runs,
        lambda _: click_ceiling(
            monitor, mode.pgbench_seconds, seed.programs["clicks"], mode.codes, cpu
        ),
    )
    log(f"  pgbench: {results['ceilings']['pgbench']}")
    log(f"database ceiling for purchases: pgbench, {mode.runs} runs of {mode.pgbench_seconds}s")
    program = seed.programs["conversions"]
    results["ceilings"]["pgbench_purchase"] = medians.repeated(
        mode.runs,
        lambda _: purchase_ceiling(
            monitor, mode.pgbench_seconds, program, seed.codes[program], cpu
        ),
    )
    log(f"  pgbench purchases: {results['ceilings']['pgbench_purchase']}")
    phases.done("pgbench")

    for workers in config.workers:
        bare = bare_run(workers, mode, cpu)
        results["ceilings"]["bare"][str(workers)] = bare
        log(f"  bare: {bare['requests_per_s']} req/s, p99 {bare['p99_ms']} ms (medians)")
        server = Server.service(workers)
        try:
            server.wait_ready("/healthz")
            run_scenarios(server, load, config, cpu, monitor, results)
            if workers == max(config.workers):
                log("metrics endpoints over the data set")
                with phases.within("metrics"):
                    results["metrics"] = metrics_phase(
                        server, seed.admin_key, results["dataset"], mode, monitor
                    )
        finally:
            outcome = server.stop(LOGS / f"service-{workers}w.log")
            results.setdefault("server_output", {})[f"{workers}w"] = outcome
        phases.done(f"load runs, {workers} worker(s)")

    for replicas in config.replicas:
        cluster = Cluster(replicas, config.replica_workers)
        log(
            f"{cluster.name}: {replicas} replica(s) of {config.replica_workers} "
            "worker(s) behind HAProxy"
        )
        try:
            cluster.start()
            run_scenarios(cluster, load, config, cpu, monitor, results, into="replicas")
        except Exception as exc:  # the scale-out phase must not lose the results before it
            log(f"  {cluster.name}: FAILED: {exc}")
            results["failures"].append(
                {
                    "scenario": "all",
                    "service": cluster.name,
                    "workers": cluster.workers,
                    "error": str(exc)[:2000],
                }
            )
        finally:
            results.setdefault("server_output", {})[cluster.name] = cluster.stop(LOGS)
        phases.done(f"load runs, {replicas} replica(s)")


def full_run(
    config: Config,
    monitor: Monitor,
    data: dict[str, Any],
    phases: Phases,
    at_start: dict[str, Any],
) -> dict[str, Any]:
    """Scenario set-up, then one round of measurements; the results without verdicts."""
    log("scenario set-up")
    seed = asyncio.run(scenarios.seed(config.mode.codes))
    with tempfile.TemporaryDirectory(prefix="bench-codes-") as scratch:
        load = scenarios.build(seed, monitor, Path(scratch))
        phases.done("scenario set-up")
        results: dict[str, Any] = {
            **header(config, monitor),
            "server": {
                "uvicorn_flags": list(UVICORN_FLAGS),
                "env": SERVICE_ENV,
                **server_settings(),
            },
            **at_start,  # the load average and Postgres sessions before the run
            "runs": config.mode.runs,
            "run_seconds": config.mode.seconds,
            "warmup_seconds": config.mode.warmup,
            "replica_workers": config.replica_workers,
            "dataset": data,
            "ceilings": {"bare": {}},
            "load": [],
            "replicas": [],
            "failures": [],
            "metrics": {},
            "phases_s": phases.seconds,
        }
        measure(config, monitor, seed, load, results, phases)
    return results


def metrics_only(
    config: Config, monitor: Monitor, data: dict[str, Any], phases: Phases
) -> dict[str, Any]:
    """`--only metrics`: the metrics phase alone, on a service with the most workers asked."""
    admin_key = scenarios.admin_key()
    results: dict[str, Any] = {
        **header(config, monitor),
        "loadavg_at_start": round(os.getloadavg()[0], 2),
        "dataset": data,
        "ceilings": {"bare": {}},
        "load": [],
        "phases_s": phases.seconds,
    }
    workers = max(config.workers)
    server = Server.service(workers)
    try:
        server.wait_ready("/healthz")
        log("metrics endpoints over the data set")
        with phases.within("metrics"):
            results["metrics"] = metrics_phase(server, admin_key, data, config.mode, monitor)
    finally:
        results["server_output"] = {f"{workers}w": server.stop(LOGS / "service-metrics.log")}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    mode = config.mode
    RESULTS.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    log(f"benchmark, {mode.name} mode")
    load_at_start = wait_for_quiet(config.wait_quiet)
    started = time.monotonic()  # the wait for a quiet box is not part of the run time
    phases = Phases()
    ensure_tools()
    ensure_database()
    with monitoring() as monitor:
        sessions_at_start = {
            row["datname"] or "-": row["n"]
            for row in monitor.fetch(
                "SELECT datname, count(*) AS n FROM pg_stat_activity GROUP BY 1"
            )
        }
        phases.done("tools and database")
        log(f"data set '{mode.dataset}'")
        data = asyncio.run(dataset.ensure_dataset(DSN, mode.dataset, mode.params, log))
        phases.done("data set")
        if config.only == "metrics":
            results = metrics_only(config, monitor, data, phases)
        else:
            at_start = {
                "loadavg_at_start": load_at_start,
                "postgres_sessions_at_start": sessions_at_start,
            }
            results = full_run(config, monitor, data, phases, at_start)

    if config.only == "metrics":
        results["targets"] = metric_targets(results)
        results["total_seconds"] = round(time.monotonic() - started, 1)
        markdown = report.render_metrics_only(results)
        report.write("metrics", results, markdown)
        print()
        print(markdown)
        return 0
    results["targets"] = evaluate(results)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    markdown = report.render_markdown(results)
    report.write("latest", results, markdown)
    print()
    print(markdown)
    log(
        f"done in {results['total_seconds'] / 60:.1f} min; "
        f"results in {RESULTS.relative_to(ROOT)}/latest.md"
    )
    return 0
