"""What a run is: the fixed environment (paths, database, server settings) and the options.

The options come from the command line once, as a frozen `Config`; nothing else in the
package reads argv or the environment to decide what to measure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.dataset import FULL as FULL_DATASET
from bench.dataset import QUICK as QUICK_DATASET
from bench.dataset import Params

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
WRK_DIR = BENCH / "wrk"
PGBENCH_DIR = BENCH / "pgbench"
# The venv's executables (uvicorn, referral-service) sit next to its python.
BIN = Path(sys.executable).parent

# REFERRAL_BENCH_DATABASE names another database (two benchmarks on one server must not share one).
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
DATABASE = os.environ.get("REFERRAL_BENCH_DATABASE", "referral_bench")
DSN = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{DATABASE}"
SERVICE_ENV = {
    "REFERRAL_DATABASE_URL": f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{DATABASE}",
    "REFERRAL_ENVIRONMENT": "development",
    "REFERRAL_RATE_LIMITS_ENABLED": "false",
    "REFERRAL_HOUSEKEEPING_INTERVAL_SECONDS": "0",
    # Every wrk visitor has its own address in X-Forwarded-For, as behind a load balancer.
    "REFERRAL_FORWARDED_ALLOW_IPS": "127.0.0.1",
}
UVICORN_FLAGS = (
    "--host",
    "127.0.0.1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--no-proxy-headers",  # the app reads X-Forwarded-For itself (REFERRAL_FORWARDED_ALLOW_IPS)
    "--log-level",
    "warning",
    "--timeout-graceful-shutdown",
    "5",
)
CONNECTIONS = 64
WRK_THREADS = 2
SCENARIO_PREFIX = "bench scenario "
KEY_PREFIX = "bench "


def server_settings() -> dict[str, str]:
    """How the results describe the service's pool and log level: its defaults, read from the
    service's own settings so the description cannot drift (app/core/db.py: no overflow)."""
    from app.core.config import Settings

    fields = Settings.model_fields
    return {
        "pool": f"{fields['database_pool_size'].default} per worker, no overflow (defaults)",
        "log_level": f"{fields['log_level'].default} (default)",
    }


@dataclass(frozen=True, kw_only=True)
class Mode:
    """How big and how long: the full benchmark or the quick one."""

    name: str
    runs: int  # measured runs of every scenario and ceiling; the report shows their medians
    # Default worker counts of one process, and replica counts behind HAProxy.
    workers: tuple[int, ...]
    replicas: tuple[int, ...]
    seconds: int  # each measured load run
    warmup: int
    pgbench_seconds: int
    codes: int  # codes per scenario program, drawn with Zipf popularity
    metrics_seconds: float  # time budget per metrics endpoint...
    metrics_floor_seconds: float  # ...stretched up to this for 3 samples of a slow one
    metrics_requests: int
    raw_repeats: int  # raw recounts per endpoint, while within metrics_floor_seconds
    stable_seconds: float  # row counts unchanged this long: the server is done
    dataset: str
    params: Params


FULL = Mode(
    name="full",
    runs=3,
    workers=(1, 2),
    replicas=(1, 2),
    seconds=8,
    warmup=2,
    pgbench_seconds=8,
    codes=10_000,
    metrics_seconds=10.0,
    metrics_floor_seconds=30.0,
    metrics_requests=50,
    raw_repeats=3,
    stable_seconds=1.0,
    dataset="full",
    params=FULL_DATASET,
)
QUICK = Mode(
    name="quick",
    runs=3,
    # Within 3 minutes: 2 workers, and 2 replicas of 1 worker (the full run adds the 1s).
    workers=(2,),
    replicas=(2,),
    seconds=2,
    warmup=1,
    pgbench_seconds=2,
    codes=2_000,
    metrics_seconds=2.0,
    metrics_floor_seconds=4.0,
    metrics_requests=20,
    raw_repeats=1,
    stable_seconds=0.6,
    dataset="quick",
    params=QUICK_DATASET,
)


# Two replicas of one worker each: as many service processes as 2 workers, on 2 cores.
DEFAULT_REPLICA_WORKERS = 1


@dataclass(frozen=True, kw_only=True)
class Config:
    """The options of one run, parsed once from the command line."""

    mode: Mode
    workers: tuple[int, ...]  # worker counts, in the order they run
    # Replica counts behind HAProxy, in the order they run (none: no scale-out phase), and
    # the workers of each replica.
    replicas: tuple[int, ...]
    replica_workers: int = DEFAULT_REPLICA_WORKERS
    wait_quiet: float  # seconds to wait for a quiet machine first
    only: str | None  # one phase alone ("metrics"), or None for the whole benchmark

    @property
    def command(self) -> str:
        """The run as the results record it: every option that is not the default."""
        only = f" --only {self.only}" if self.only else ""
        quick = " --quick" if self.mode is QUICK else ""
        mode = self.mode
        workers = "" if self.workers == mode.workers else f" --workers {join(self.workers)}"
        replicas = "" if self.replicas == mode.replicas else f" --replicas '{join(self.replicas)}'"
        if self.replica_workers != DEFAULT_REPLICA_WORKERS:
            replicas += f" --replica-workers {self.replica_workers}"
        return f"python bench/run.py{only}{quick}{workers}{replicas}"


def join(counts: tuple[int, ...]) -> str:
    return ",".join(str(n) for n in counts)


def counts(text: str) -> tuple[int, ...]:
    """ "1,2" -> (1, 2); "" -> () (a phase left out)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"counts must be at least 1: {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description="Run the benchmark (see the bench package's docstring)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data set and short runs (< 3 min)"
    )
    parser.add_argument(
        "--workers",
        type=counts,
        help="worker counts of one service process to run (default 1,2; --quick: 2)",
    )
    parser.add_argument(
        "--replicas",
        type=counts,
        help="replica counts to run behind a local HAProxy, each replica its own service "
        "process on its own port (default 1,2; --quick: 2; '' leaves the phase out)",
    )
    parser.add_argument(
        "--replica-workers",
        type=int,
        default=DEFAULT_REPLICA_WORKERS,
        metavar="N",
        help="workers per replica (default 1)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to drop "
        "below the number of cores (other work on the box skews every figure)",
    )
    parser.add_argument(
        "--only",
        choices=["metrics"],
        help="run one phase alone: 'metrics' times the metrics endpoints over the data set "
        "(no load runs; results in bench/results/metrics.md and metrics.json)",
    )
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.workers is None:
        args.workers = mode.workers
    if args.replicas is None:
        args.replicas = mode.replicas
    if not args.workers:
        parser.error("--workers needs at least one worker count")
    if args.replica_workers < 1:
        parser.error("--replica-workers must be at least 1")
    return Config(
        mode=mode,
        workers=args.workers,
        replicas=args.replicas,
        replica_workers=args.replica_workers,
        wait_quiet=args.wait_quiet,
        only=args.only,
    )
