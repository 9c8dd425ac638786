"""The benchmark: ceilings, hot paths under load, metrics over a generated data set, memory.

    python bench/run.py [--quick]        (make bench, make bench-quick)

In one run, with one set of server settings (uvicorn, uvloop, httptools, no access log):
  - pgbench doing single-row INSERTs into a click-shaped table: the database ceiling;
  - a bare FastAPI app answering a constant (bench/bare_app.py): the framework ceiling,
    with 1 and with 2 workers;
  - the service with 1 and with 2 workers under wrk (64 connections): POST /v1/clicks,
    GET /r/{code} and POST /v1/conversions, codes drawn with Zipf-skewed popularity;
    after each run the 2xx answers are checked against the rows stored;
  - the metrics endpoints over the generated data set (bench/generate.py), timed against the
    same numbers recounted from the raw tables;
  - the RSS of every worker during the load runs.
Results: bench/results/latest.json and latest.md; server logs of the run in bench/results/logs/.

Only the database `referral_bench` on 127.0.0.1:5432 is used (created and migrated when
missing); nothing listens beyond the loopback, and every wait has a bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import generate  # noqa: E402  (bench/generate.py)

RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
WRK_DIR = BENCH / "wrk"
PGBENCH_SCRIPT = BENCH / "pgbench" / "insert_click.sql"
BIN = Path(sys.executable).parent

PG_HOST, PG_PORT, PG_USER, DATABASE = "127.0.0.1", 5432, "postgres", "referral_bench"
DSN = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{DATABASE}"
SERVICE_ENV = {
    "REFERRAL_DATABASE_URL": f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{DATABASE}",
    "REFERRAL_ENVIRONMENT": "development",
    "REFERRAL_RATE_LIMITS_ENABLED": "false",
    "REFERRAL_HOUSEKEEPING_INTERVAL_SECONDS": "0",
    # Every wrk visitor has its own address in X-Forwarded-For, as behind a load balancer.
    "REFERRAL_FORWARDED_ALLOW_IPS": "127.0.0.1",
}
UVICORN_FLAGS = [
    "--host",
    "127.0.0.1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--no-proxy-headers",  # the app reads X-Forwarded-For itself
    "--log-level",
    "warning",
    "--timeout-graceful-shutdown",
    "5",
]
CONNECTIONS = 64
WRK_THREADS = 2
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
SCENARIO_PREFIX = "bench scenario "
KEY_PREFIX = "bench "
METRICS_DAYS = 90
MB = 1024 * 1024


@dataclass(frozen=True)
class Mode:
    name: str
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
    params: generate.Params


FULL = Mode("full", 20, 3, 20, 10_000, 10.0, 30.0, 50, 3, 1.0, "full", generate.FULL)
QUICK = Mode("quick", 4, 1, 4, 2_000, 2.0, 4.0, 20, 1, 0.6, "quick", generate.QUICK)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- tools, database


def ensure_tools() -> None:
    """wrk, pgbench and psql, installed from Debian's packages when missing."""
    missing = {
        "wrk": ["wrk"],
        "pgbench": ["postgresql-contrib", "postgresql-client"],
        "psql": ["postgresql-client"],
    }
    packages = sorted(
        {pkg for tool, pkgs in missing.items() if not shutil.which(tool) for pkg in pkgs}
    )
    if not packages:
        return
    log(f"installing {' '.join(packages)} with apt-get")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, timeout=600, check=False)
        subprocess.run(install, env=env, timeout=600, check=True)
    for tool in missing:
        if not shutil.which(tool):
            sys.exit(f"{tool} is still missing after apt-get install; install it and rerun")


def psql(sql: str, database: str = DATABASE, timeout: float = 600) -> str:
    out = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            PG_HOST,
            "-p",
            str(PG_PORT),
            "-U",
            PG_USER,
            "-d",
            database,
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}\n  SQL: {sql[:300]}")
    return out.stdout.strip()


class Monitor:
    """One database session held for the whole run, for the counts and checks between runs.

    Opened before any load, so a server that runs out of connection slots under load (other
    sessions share it) cannot make the checks fail. asyncpg on its own thread's event loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection: Any = None

    def _call(self, make: Callable[[], Any], timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def connect(self, attempts: int = 60) -> None:
        import asyncpg

        for attempt in range(attempts):
            try:
                self.connection = self._call(lambda: asyncpg.connect(DSN), timeout=30)
                return
            except (OSError, asyncpg.PostgresError) as exc:  # e.g. too many clients already
                if attempt == attempts - 1:
                    raise
                log(f"  (monitor connection refused: {exc}; retrying)")
                time.sleep(1)

    def value(self, sql: str) -> Any:
        return self._call(lambda: self.connection.fetchval(sql))

    def row(self, sql: str) -> Any:
        return self._call(lambda: self.connection.fetchrow(sql))

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(self._call(lambda: self.connection.fetch(sql, *args)))

    def execute(self, sql: str) -> None:
        self._call(lambda: self.connection.execute(sql))

    def close(self) -> None:
        if self.connection is not None:
            self._call(self.connection.close, timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


db = Monitor()


def ensure_database() -> None:
    ready = subprocess.run(["pg_isready", "-h", PG_HOST, "-p", str(PG_PORT)], capture_output=True)
    if ready.returncode != 0:
        sys.exit(f"Postgres is not answering on {PG_HOST}:{PG_PORT}")
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres"):
        log(f"creating database {DATABASE}")
        psql(f"CREATE DATABASE {DATABASE}", database="postgres")
    migrate = subprocess.run(
        [str(BIN / "referral-service"), "migrate"],
        env={**os.environ, **SERVICE_ENV},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if migrate.returncode != 0:
        sys.exit(f"migration failed:\n{migrate.stdout}\n{migrate.stderr}")


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    memory = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    mem_kb = int(memory[1]) if memory else 0
    versions = {}
    for package in (
        "fastapi",
        "uvicorn",
        "uvloop",
        "httptools",
        "sqlalchemy",
        "asyncpg",
        "pydantic",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    pg_settings = {
        name: db.value(f"SHOW {name}")
        for name in ("shared_buffers", "synchronous_commit", "max_connections", "work_mem")
    }
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model[1].strip() if model else platform.processor(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": db.value("SELECT version()").split(" on ")[0],
        "postgres_settings": pg_settings,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0].strip()
        if (wrk.stdout or wrk.stderr)
        else "?",
        "packages": versions,
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


# --------------------------------------------------------------------------- processes, sampling


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Max VmRSS of each worker, sampled every 0.2 s while a load run goes on."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.max_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                kb = rss_kb(pid)
                if kb is not None:
                    self.max_kb[pid] = max(self.max_kb.get(pid, 0), kb)
            self._stop.wait(0.2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def max_mb(self) -> float | None:
        return round(max(self.max_kb.values()) / 1024, 1) if self.max_kb else None


class CpuAccount:
    """How much of the machine's CPU went to processes that are not part of the benchmark.

    A noise gauge: other sessions share this box. Ours: the server, wrk/pgbench, and the
    Postgres backends of referral_bench; Postgres' own helpers count as ours too.
    """

    HZ = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def ours(pid: int, command: str) -> bool:
        if pid == os.getpid() or command.startswith(("wrk", "pgbench", "psql")):
            return True
        if command.startswith("postgres: "):
            parts = command.split()
            if len(parts) >= 5 and "(" in parts[4]:  # a client backend: user, database, host(port)
                return parts[3] == DATABASE
            if "autovacuum worker" in command:
                return command.rstrip().endswith(DATABASE)
            return True  # WAL writer, checkpointer, ...: shared by all, counted as ours
        return "postgresql" in command and " -D " in command  # the postmaster

    @staticmethod
    def snapshot() -> dict[int, tuple[int, int]]:
        ticks = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                ticks[int(entry)] = (int(fields[11]) + int(fields[12]), int(fields[19]))
        return ticks

    def measure(
        self,
        before: dict[int, tuple[int, int]],
        seconds: float,
        servers: frozenset[int] | set[int] = frozenset(),
    ) -> dict[str, float]:
        after = self.snapshot()
        ours = others = server = database = 0
        for pid, (ticks, started) in after.items():
            previous = before.get(pid)
            used = ticks - previous[0] if previous and previous[1] == started else ticks
            if used <= 0:
                continue
            command = cmdline(pid)
            if pid in servers:
                server += used
            elif command.startswith("postgres: ") and f" {DATABASE} " in command:
                database += used
            if pid in servers or self.ours(pid, command):
                ours += used
            else:
                others += used
        capacity = (os.cpu_count() or 1) * seconds * self.HZ
        return {
            "ours_share": round(ours / capacity, 3),
            "others_share": round(others / capacity, 3),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            # CPU time, not wall time: what a request costs whatever else runs on the box.
            "server_cpu_s": round(server / self.HZ, 2),
            "postgres_cpu_s": round(database / self.HZ, 2),
        }


def summarize_problems(lines: list[str]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for line in lines:
        try:
            entry = json.loads(line)
            exception = (entry.get("exc_info") or "").strip().splitlines()
            kind = f"{entry.get('level')} {entry.get('message', '')[:80]}"
            if exception:
                kind += f" | {exception[-1][:160]}"
        except (ValueError, AttributeError):
            kind = line[:160]
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


class Server:
    """uvicorn in its own process group, stopped by that group's id; output kept in a file."""

    def __init__(self, name: str, app: list[str], workers: int, env: dict[str, str]):
        self.name = name
        self.port = free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        # Kept open for the server's lifetime; closed and deleted by stop().
        self.output = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix=f"bench-{name}-", suffix=".log", delete=False
        )
        command = [
            str(BIN / "uvicorn"),
            *app,
            *UVICORN_FLAGS,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail(40)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + path, timeout=2) as answer,
            ):
                if answer.status == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name} did not answer {path} within {timeout:.0f}s")
        # Every worker up: the supervisor's children all exist and have imported the app.
        deadline = time.monotonic() + timeout
        while self.workers > 1 and len(self.worker_pids()) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: fewer than {self.workers} workers started")
            time.sleep(0.2)
        time.sleep(1.0 if self.workers > 1 else 0.2)

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.process.pid]
        return [pid for pid in children_of(self.process.pid) if "spawn_main" in cmdline(pid)]

    def all_pids(self) -> set[int]:
        pids = {self.process.pid}
        for pid in list(pids):
            pids.update(children_of(pid))
        return pids

    def log_tail(self, lines: int) -> str:
        self.output.flush()
        text = Path(self.output.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, keep_log: Path | None = None) -> dict[str, Any]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.output.close()
        text = Path(self.output.name).read_text(errors="replace").splitlines()
        Path(self.output.name).unlink(missing_ok=True)
        problems = [
            line
            for line in text
            if re.search(r'"level": "(WARNING|ERROR|CRITICAL)"|Traceback|^ERROR', line)
        ]
        kinds = summarize_problems(problems)
        if keep_log is not None:
            keep_log.write_text(
                f"# {self.name}: {len(text)} lines of output, {len(problems)} warning/error lines\n"
                "# by kind (count, level, message, last line of the exception):\n"
                + "".join(f"#   {n:5d}  {kind}\n" for kind, n in kinds.items())
                + "# first of them in full:\n"
                + "\n".join(problems[:10])
                + "\n# last lines:\n"
                + "\n".join(text[-40:])
                + "\n"
            )
        return {"output_lines": len(text), "problems": kinds}


# --------------------------------------------------------------------------- wrk, pgbench


def parse_duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    url: str,
    script: str,
    args: list[str],
    seconds: int,
    connections: int = CONNECTIONS,
    threads: int = WRK_THREADS,
) -> dict[str, Any]:
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
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    marker = [line for line in out.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if out.returncode != 0 or not marker:
        raise RuntimeError(
            f"wrk failed ({out.returncode}): {out.stderr.strip()}\n{out.stdout[-2000:]}"
        )
    result = json.loads(marker[-1][len("BENCH_JSON ") :])
    text: dict[str, Any] = {}
    if match := re.search(r"Requests/sec:\s+([\d.]+)", out.stdout):
        text["requests_per_s"] = float(match[1])
    for percent in ("50", "99"):
        if match := re.search(rf"^\s+{percent}%\s+(\S+)", out.stdout, re.M):
            text[f"p{percent}_ms"] = parse_duration_ms(match[1])
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout):
        text["non_2xx_3xx"] = int(match[1])
    result["wrk_text"] = text
    return result


def wait_until_stable(
    count: Callable[[], dict[str, int]], stable_for: float, limit: float = 30
) -> dict[str, int]:
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


def available_connections() -> int:
    return int(
        db.value(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int - count(*)"
            " FROM pg_stat_activity"
        )
    )


def run_pgbench(seconds: int, program_id: str, codes: int, cpu: CpuAccount) -> dict[str, Any]:
    db.execute(
        "CREATE TABLE IF NOT EXISTS bench_click_ceiling"
        " (LIKE clicks INCLUDING DEFAULTS INCLUDING INDEXES)"
    )
    db.execute("TRUNCATE bench_click_ceiling")
    clients = min(CONNECTIONS, available_connections() - 8)
    if clients < 8:
        return {"error": f"only {clients + 8} free Postgres connections; pgbench skipped"}
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
                str(PGBENCH_SCRIPT),
                "-D",
                f"program={program_id}",
                "-D",
                f"ncodes={codes}",
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
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)[1])  # type: ignore[index]
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout)[1])  # type: ignore[index]
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    stored = int(db.value("SELECT count(*) FROM bench_click_ceiling"))
    latencies.sort()
    return {
        "clients": clients,
        "requests_per_s": tps,
        "transactions": processed,
        "failed": int(failed[1]) if failed else 0,
        "stored": stored,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "noise": noise,
    }


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return round(sorted_values[rank], 3)


# --------------------------------------------------------------------------- scenario set-up


@dataclass
class Scenario:
    name: str
    path: str
    script: str
    program_id: str
    codes_file: Path
    args: list[str]
    success: str  # the status that means "stored"
    count: Callable[[], dict[str, int]]
    extra: dict[str, Any] = field(default_factory=dict)


def cli_key(kind: str, name: str, programs: list[str]) -> str:
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


async def create_programs(admin_key: str) -> tuple[dict[str, str], dict[str, str]]:
    """Programs, reward rules and keys through the API (in process, over ASGI), as a merchant
    would; returns the program ids and the widget (publishable) and backend (secret) keys."""
    import httpx

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
    import asyncpg

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
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await generate.ensure_marker_tables(conn)
        await generate.restore_dropped_indexes(conn, log)
        old = [
            str(r[0])
            for r in await conn.fetch(
                "SELECT id FROM programs WHERE name LIKE $1", SCENARIO_PREFIX + "%"
            )
        ]
        await generate.purge_programs(conn, old, lambda text: log(text.strip()))
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


def zipf_file(directory: Path, name: str, codes: list[str], draws: int = 100_000) -> Path:
    """The codes in request order, popularity Zipf (s = 1): the first rank takes ~10 %."""
    rng = random.Random(7)
    ranked = codes[:]
    rng.shuffle(ranked)
    cumulative = generate.zipf_cumulative(len(ranked), 1.0)
    path = directory / f"codes-{name}.txt"
    path.write_text("\n".join(rng.choices(ranked, cum_weights=cumulative, k=draws)) + "\n")
    return path


SESSIONS_OPENED = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
BUSY_SESSIONS = (
    "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle')"
)


def row_counter(program_id: str, tables: tuple[str, ...]) -> Callable[[], dict[str, int]]:
    """Rows of the program per table, and `busy`: database sessions inside a transaction."""
    selects = ", ".join(
        f"(SELECT count(*) FROM {t} WHERE program_id = '{program_id}')" for t in tables
    )
    names = (*tables, "busy")

    def count() -> dict[str, int]:
        values = db.row(f"SELECT {selects}, {BUSY_SESSIONS}")
        return dict(zip(names, map(int, values), strict=True))

    return count


# --------------------------------------------------------------------------- load runs


def load_run(scenario: Scenario, server: Server, mode: Mode, cpu: CpuAccount) -> dict[str, Any]:
    log(
        f"  {scenario.name}, {server.workers} worker(s): "
        f"warm-up {mode.warmup}s, run {mode.seconds}s"
    )
    # The program's rows before its warm-up: the check below covers warm-up and run together,
    # so no wait for the warm-up's cut-off requests is needed between the two.
    before = scenario.count()
    before.pop("busy")
    whole, whole_started = cpu.snapshot(), time.monotonic()
    sessions_before = int(db.value(SESSIONS_OPENED))
    warm = run_wrk(
        server.url, scenario.script, [*scenario.args, f"warmup{server.workers}"], mode.warmup
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
            server.url, scenario.script, [*scenario.args, f"run{server.workers}"], mode.seconds
        )
    noise = cpu.measure(snapshot, run["duration_s"], server.all_pids())
    after = wait_until_stable(scenario.count, mode.stable_seconds)
    work = cpu.measure(whole, time.monotonic() - whole_started, server.all_pids())
    # New database connections while it ran: a pool that churns pays for a backend each time.
    sessions_opened = int(db.value(SESSIONS_OPENED)) - sessions_before
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
    pct = run["latency_ms"]["percentiles"]
    return {
        "scenario": scenario.name,
        "path": scenario.path,
        "workers": server.workers,
        "duration_s": round(duration, 2),
        "requests": run["requests"],
        "requests_per_s_all": round(run["requests"] / duration, 1),
        "requests_per_s": round(run_acked / duration, 1),  # stored-and-acknowledged per second
        "p50_ms": round(pct["50"], 2),
        "p95_ms": round(pct["95"], 2),
        "p99_ms": round(pct["99"], 2),
        "max_ms": round(run["latency_ms"]["max"], 2),
        "statuses": statuses,
        "unexpected_statuses": unexpected,
        "socket_errors": errors,
        "check": check,
        "max_rss_mb": rss.max_mb(),
        "rss_mb_per_worker": {str(pid): round(kb / 1024, 1) for pid, kb in rss.max_kb.items()},
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


def per_request(noise: dict[str, float], requests: int) -> dict[str, float | None]:
    """Server and Postgres CPU milliseconds per answered request during the measured run."""
    if not requests:
        return {"server": None, "postgres": None}
    return {
        "server": round(noise["server_cpu_s"] * 1000 / requests, 3),
        "postgres": round(noise["postgres_cpu_s"] * 1000 / requests, 3),
    }


def bare_run(workers: int, mode: Mode, cpu: CpuAccount) -> dict[str, Any]:
    server = Server(f"bare-{workers}w", ["bare_app:app", "--app-dir", str(BENCH)], workers, {})
    try:
        server.wait_ready("/ping")
        log(f"  bare FastAPI, {workers} worker(s): warm-up {mode.warmup}s, run {mode.seconds}s")
        run_wrk(server.url, "bare.lua", [], mode.warmup)
        snapshot = cpu.snapshot()
        with RssSampler(server.worker_pids()) as rss:
            run = run_wrk(server.url, "bare.lua", [], mode.seconds)
        noise = cpu.measure(snapshot, run["duration_s"], server.all_pids())
    finally:
        server.stop(LOGS / f"bare-{workers}w.log")
    statuses = {k: int(v) for k, v in run["statuses"].items()}
    pct = run["latency_ms"]["percentiles"]
    return {
        "workers": workers,
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


# --------------------------------------------------------------------------- metrics

METRIC_ENDPOINTS = {
    "summary": ("/v1/programs/{program}/metrics/summary", {}),
    "timeseries": ("/v1/programs/{program}/metrics/timeseries", {"interval": "day"}),
    "channels": ("/v1/programs/{program}/metrics/channels", {"limit": "50"}),
    "referrers": (
        "/v1/programs/{program}/metrics/referrers",
        {"limit": "100", "order_by": "conversions"},
    ),
}
METRIC_TARGET_MS = {"summary": 50, "timeseries": 50, "channels": 50, "referrers": 100}
METRIC_SPEEDUP = 50

# The same numbers recounted from the raw events, no rollups: $1 program, [$2, $3) the range.
RAW_SCOPE = "program_id = $1 AND occurred_at >= $2 AND occurred_at < $3"
RAW_SQL = {
    "summary": f"""
        WITH k AS (SELECT count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {RAW_SCOPE}),
             r AS (SELECT count(*) AS referrals,
                          count(*) FILTER (WHERE EXISTS (SELECT 1 FROM conversions c
                              WHERE c.referral_id = referrals.id AND c.status = 'attributed'))
                              AS converted_referrals
                   FROM referrals WHERE {RAW_SCOPE}),
             v AS (SELECT count(*) AS conversions,
                          coalesce(sum(amount - refunded_amount), 0) AS revenue
                   FROM conversions WHERE {RAW_SCOPE} AND status = 'attributed'),
             w AS (SELECT coalesce(sum(w.amount) FILTER (WHERE w.unit = 'USD'), 0) AS reward_cost
                   FROM rewards w JOIN conversions c ON c.id = w.conversion_id
                   WHERE c.program_id = $1 AND c.occurred_at >= $2 AND c.occurred_at < $3
                     AND w.status IN ('pending', 'approved', 'paid'))
        SELECT * FROM k, r, v, w""",
    "timeseries": f"""
        WITH days AS (SELECT generate_series($2::timestamptz, $3::timestamptz - interval '1 day',
                                             interval '1 day') AS day),
             k AS (SELECT date_trunc('day', occurred_at) AS day, count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {RAW_SCOPE} GROUP BY 1),
             r AS (SELECT date_trunc('day', occurred_at) AS day, count(*) AS referrals
                   FROM referrals WHERE {RAW_SCOPE} GROUP BY 1),
             v AS (SELECT date_trunc('day', occurred_at) AS day, count(*) AS conversions,
                          sum(amount - refunded_amount) AS revenue
                   FROM conversions WHERE {RAW_SCOPE} AND status = 'attributed' GROUP BY 1),
             w AS (SELECT date_trunc('day', c.occurred_at) AS day, sum(w.amount) AS reward_cost
                   FROM rewards w JOIN conversions c ON c.id = w.conversion_id
                   WHERE c.program_id = $1 AND c.occurred_at >= $2 AND c.occurred_at < $3
                     AND w.status IN ('pending', 'approved', 'paid') GROUP BY 1)
        SELECT days.day, k.clicks, k.unique_clicks, r.referrals, v.conversions, v.revenue,
               w.reward_cost
        FROM days LEFT JOIN k USING (day) LEFT JOIN r USING (day) LEFT JOIN v USING (day)
             LEFT JOIN w USING (day) ORDER BY days.day""",
    "channels": f"""
        WITH k AS (SELECT coalesce(nullif(utm_source, ''), 'direct') AS s,
                          coalesce(nullif(utm_medium, ''), 'direct') AS m,
                          coalesce(nullif(utm_campaign, ''), 'direct') AS c,
                          count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {RAW_SCOPE} GROUP BY 1, 2, 3),
             v AS (SELECT coalesce(nullif(k.utm_source, ''), 'direct') AS s,
                          coalesce(nullif(k.utm_medium, ''), 'direct') AS m,
                          coalesce(nullif(k.utm_campaign, ''), 'direct') AS c,
                          count(*) AS conversions, sum(v.amount - v.refunded_amount) AS revenue
                   FROM conversions v LEFT JOIN clicks k ON k.id = v.click_id
                   WHERE v.program_id = $1 AND v.occurred_at >= $2 AND v.occurred_at < $3
                     AND v.status = 'attributed' GROUP BY 1, 2, 3)
        SELECT * FROM k FULL JOIN v USING (s, m, c)
        ORDER BY coalesce(k.clicks, 0) DESC, coalesce(v.conversions, 0) DESC, s, m, c LIMIT 50""",
    "referrers": f"""
        WITH k AS (SELECT referrer_id, count(*) AS clicks FROM clicks WHERE {RAW_SCOPE} GROUP BY 1),
             r AS (SELECT referrer_id, count(*) AS referrals
                   FROM referrals WHERE {RAW_SCOPE} GROUP BY 1),
             v AS (SELECT referrer_id, count(*) AS conversions,
                          sum(amount - refunded_amount) AS revenue
                   FROM conversions WHERE {RAW_SCOPE} AND status = 'attributed' GROUP BY 1)
        SELECT f.id, f.external_id, k.clicks, r.referrals, v.conversions, v.revenue
        FROM k FULL JOIN r USING (referrer_id) FULL JOIN v USING (referrer_id)
             JOIN referrers f ON f.id = referrer_id
        ORDER BY coalesce(v.conversions, 0) DESC, f.external_id, f.id LIMIT 100""",
}


def time_raw_queries(
    program_id: str, start: datetime, end: datetime, repeats: int, budget_s: float, names: list[str]
) -> dict[str, Any]:
    """Each recount `repeats` times, fewer when one takes long; on the monitor's session."""
    timings: dict[str, Any] = {}
    db.execute("SET statement_timeout = '180s'")
    try:
        for name in names:
            samples: list[float] = []
            rows: list[Any] = []
            began = time.perf_counter()
            while len(samples) < repeats and (
                not samples or time.perf_counter() - began < budget_s
            ):
                started = time.perf_counter()
                rows = db.fetch(RAW_SQL[name], uuid.UUID(program_id), start, end)
                samples.append((time.perf_counter() - started) * 1000)
            timings[name] = {
                "median_ms": round(statistics.median(samples), 1),
                "samples_ms": [round(s, 1) for s in samples],
                "rows": [dict(r) for r in rows],
            }
    finally:
        db.execute("RESET statement_timeout")
    return timings


def compare_with_raw(
    name: str, answer: dict[str, Any], raw_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The endpoint's numbers against the raw recount: a fast wrong answer does not count."""
    from decimal import Decimal

    def dec(value: Any) -> Decimal:
        return Decimal(str(value or 0)).quantize(Decimal("0.01"))

    mismatches = []
    if name == "summary":
        raw = raw_rows[0]
        for key in ("clicks", "unique_clicks", "referrals", "converted_referrals", "conversions"):
            if int(answer.get(key, -1)) != int(raw[key]):
                mismatches.append(f"{key}: endpoint {answer.get(key)} vs raw {raw[key]}")
        for key in ("revenue", "reward_cost"):
            if dec(answer.get(key)) != dec(raw[key]):
                mismatches.append(f"{key}: endpoint {answer.get(key)} vs raw {raw[key]}")
    elif name == "timeseries":
        buckets = answer.get("buckets", [])
        for key in ("clicks", "unique_clicks", "referrals", "conversions"):
            got = sum(int(b.get(key, 0)) for b in buckets)
            want = sum(int(r[key] or 0) for r in raw_rows)
            if got != want:
                mismatches.append(f"sum of {key}: endpoint {got} vs raw {want}")
        if len(buckets) != len(raw_rows):
            mismatches.append(f"buckets: endpoint {len(buckets)} vs raw {len(raw_rows)}")
    elif name == "channels":
        rows = answer.get("data", [])
        by_channel = {
            (r["utm_source"], r["utm_medium"], r["utm_campaign"]): int(r["clicks"]) for r in rows
        }
        raw_by_channel = {(r["s"], r["m"], r["c"]): int(r["clicks"] or 0) for r in raw_rows}
        common = set(by_channel) & set(raw_by_channel)
        if not common or any(by_channel[k] != raw_by_channel[k] for k in common):
            mismatches.append("clicks per channel differ from the raw recount")
    elif name == "referrers":
        rows = answer.get("data", [])
        top = [(r["external_id"], int(r["conversions"])) for r in rows[:10]]
        raw_top = [(r["external_id"], int(r["conversions"] or 0)) for r in raw_rows[:10]]
        if top != raw_top:
            mismatches.append(f"top 10 differ: endpoint {top[:3]}… vs raw {raw_top[:3]}…")
    return {"match": not mismatches, "mismatches": mismatches}


def metrics_phase(
    server: Server, admin_key: str, dataset: dict[str, Any], mode: Mode
) -> dict[str, Any]:
    import httpx

    program = dataset["program_id"]
    end = datetime.fromisoformat(dataset["ends_at"])
    start = end - timedelta(days=METRICS_DAYS)
    window = {"from": start.isoformat(), "to": end.isoformat()}
    result: dict[str, Any] = {"window": window, "days": METRICS_DAYS, "endpoints": {}}
    try:
        paths = set(httpx.get(server.url + "/openapi.json", timeout=30).json().get("paths", {}))
    except Exception as exc:  # the service's schema is how we learn what exists
        paths = set()
        result["note"] = f"could not read /openapi.json: {exc!r}"
    available = [
        n
        for n, (p, _) in METRIC_ENDPOINTS.items()
        if p.replace("{program}", "{program_id}") in paths
    ]
    for name in METRIC_ENDPOINTS:
        if name not in available:
            log(f"  metrics {name}: not available (no such route in the service yet); skipped")
            result["endpoints"][name] = {"available": False}
    if not available:
        return result
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        for name in available:
            path, query = METRIC_ENDPOINTS[name]
            url = path.format(program=program)
            params = {**window, **query}
            entry: dict[str, Any] = {"available": True, "path": path}
            started = time.perf_counter()
            first = client.get(url, params=params)
            entry["first_ms"] = round((time.perf_counter() - started) * 1000, 1)
            if first.status_code != 200:
                entry["error"] = f"{first.status_code}: {first.text[:300]}"
                log(f"  metrics {name}: HTTP {first.status_code}; skipped")
                result["endpoints"][name] = entry
                continue
            # The first answer warms caches; a slow one (> 1 s) counts, caches hardly matter then.
            samples: list[float] = [entry["first_ms"]] if entry["first_ms"] > 1000 else []
            began = time.monotonic()
            # Sequential requests for the time budget; at least 3 unless past the floor.
            while len(samples) < mode.metrics_requests and (
                time.monotonic() - began < mode.metrics_seconds
                or (
                    len(samples) < 3
                    and time.monotonic()
                    - began
                    + (samples[-1] if samples else entry["first_ms"]) / 1000
                    < mode.metrics_floor_seconds
                )
            ):
                started = time.perf_counter()
                answer = client.get(url, params=params)
                samples.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    entry["error"] = f"{answer.status_code}: {answer.text[:300]}"
                    break
            ordered = sorted(samples)
            entry.update(
                {
                    "requests": len(samples),
                    "p50_ms": percentile(ordered, 50),
                    "p95_ms": percentile(ordered, 95),
                    "max_ms": round(ordered[-1], 1) if ordered else None,
                    "answer": first.json(),
                }
            )
            log(
                f"  metrics {name}: p50 {entry['p50_ms']} ms, p95 {entry['p95_ms']} ms "
                f"over {len(samples)} sequential requests"
            )
            result["endpoints"][name] = entry
    log(f"  raw recount of the same numbers ({mode.raw_repeats}x each)")
    raw = time_raw_queries(
        program, start, end, mode.raw_repeats, mode.metrics_floor_seconds, available
    )
    for name in available:
        entry = result["endpoints"][name]
        entry["raw_median_ms"] = raw[name]["median_ms"]
        entry["raw_samples_ms"] = raw[name]["samples_ms"]
        if entry.get("p50_ms"):
            entry["speedup"] = round(raw[name]["median_ms"] / entry["p50_ms"], 2)
        if "answer" in entry:
            entry["numbers"] = compare_with_raw(name, entry.pop("answer"), raw[name]["rows"])
        log(
            f"  metrics {name}: raw recount {entry['raw_median_ms']} ms, speed-up "
            f"{entry.get('speedup')}x, numbers match: {entry.get('numbers', {}).get('match')}"
        )
    return result


# --------------------------------------------------------------------------- targets, report


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    bare = results["ceilings"]["bare"]
    by_key = {(r["scenario"], r["workers"]): r for r in results["load"]}
    for scenario, label in (
        ("clicks", "clicks, 2 workers"),
        ("redirect", "redirect GET /r/{code}, 2 workers"),
    ):
        row = by_key.get((scenario, 2))
        if row is None:
            targets.append(
                {
                    "name": label,
                    "target": "≥ 0.5 x bare req/s; p99 ≤ 25 ms; 0 lost",
                    "value": "not measured (see failures)",
                    "parts": {"measured": False},
                    "met": False,
                }
            )
            continue
        ceiling = bare.get("2", {}).get("requests_per_s")
        share = row["requests_per_s"] / ceiling if ceiling else None
        parts = {
            "≥ 0.5 x bare": share is not None and share >= 0.5,
            "p99 ≤ 25 ms": row["p99_ms"] <= 25,
            "0 lost": row["check"]["lost"] == 0 and row["check"]["ok"],
        }
        targets.append(
            {
                "name": label,
                "target": "≥ 0.5 x bare req/s; p99 ≤ 25 ms; 0 lost",
                "value": f"{share or 0:.2f} x bare; p99 {row['p99_ms']} ms; "
                f"lost {row['check']['lost']}",
                "parts": parts,
                "met": all(parts.values()),
            }
        )
    row = by_key.get(("conversions", 2))
    if row is None:
        targets.append(
            {
                "name": "conversions with attribution and rules, 2 workers",
                "target": "≥ 1,000/s; p99 ≤ 50 ms; exactly-once",
                "value": "not measured (see failures)",
                "parts": {"measured": False},
                "met": False,
            }
        )
    else:
        parts = {
            "≥ 1,000/s": row["requests_per_s"] >= 1000,
            "p99 ≤ 50 ms": row["p99_ms"] <= 50,
            "exactly-once": row["check"]["ok"] and row["check"]["lost"] == 0,
        }
        targets.append(
            {
                "name": "conversions with attribution and rules, 2 workers",
                "target": "≥ 1,000/s; p99 ≤ 50 ms; exactly-once",
                "value": f"{row['requests_per_s']:.0f}/s; p99 {row['p99_ms']} ms; "
                f"check {'ok' if row['check']['ok'] else 'FAILED'}",
                "parts": parts,
                "met": all(parts.values()),
            }
        )
    for name, entry in results.get("metrics", {}).get("endpoints", {}).items():
        limit = METRIC_TARGET_MS[name]
        label = f"metrics {name}" + (" (top 100)" if name == "referrers" else "")
        if not entry.get("available"):
            targets.append(
                {
                    "name": label,
                    "target": f"p95 ≤ {limit} ms; ≥ {METRIC_SPEEDUP}x raw",
                    "value": "not available",
                    "parts": {},
                    "met": None,
                }
            )
            continue
        p95, speedup = entry.get("p95_ms"), entry.get("speedup")
        parts = {
            f"p95 ≤ {limit} ms": p95 is not None and p95 <= limit and "error" not in entry,
            f"≥ {METRIC_SPEEDUP}x raw": speedup is not None and speedup >= METRIC_SPEEDUP,
            "numbers match raw": entry.get("numbers", {}).get("match", False),
        }
        targets.append(
            {
                "name": label,
                "target": f"p95 ≤ {limit} ms; ≥ {METRIC_SPEEDUP}x raw recount",
                "value": f"p95 {p95} ms; {speedup}x raw"
                + (f"; {entry['error']}" if "error" in entry else ""),
                "parts": parts,
                "met": all(parts.values()),
            }
        )
    rss = [r["max_rss_mb"] for r in results["load"] if r.get("max_rss_mb")]
    if rss:
        worst = max(rss)
        targets.append(
            {
                "name": "memory per worker under load",
                "target": "≤ 150 MB RSS",
                "value": f"max {worst} MB",
                "parts": {"≤ 150 MB": worst <= 150},
                "met": worst <= 150,
            }
        )
    return targets


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else f"{value}{suffix}"


def met_text(met: bool | None) -> str:
    return "—" if met is None else ("**yes**" if met else "**no**")


def ratio(value: float | None, ceiling: float | None) -> str:
    return fmt(value / ceiling, 2) if value is not None and ceiling else "—"


def check_text(row: dict[str, Any]) -> str:
    """The "2xx vs stored" cell: acknowledged / stored, and everything that deserves a look."""
    c = row["check"]
    text = f"{c['acked']:,} / {c['stored']:,}"
    if c["lost"]:
        text += f" **LOST {c['lost']:,}**"
    if c["stored_unanswered"]:
        text += f" (+{c['stored_unanswered']} unanswered)"
    if row["scenario"] == "conversions":
        text += f"; {c['replays_answered_200']:,} retries → 200; rewards {c['rewards']:,}"
        if not c["rewards_ok"]:
            text += " **≠ 2 per conversion**"
    if not c["ok"]:
        text += " **CHECK FAILED**"
    if row["unexpected_statuses"]:
        answers = sorted(row["unexpected_statuses"].items())
        text += " · other answers: " + ", ".join(f"{k}: {v:,}" for k, v in answers)
    if row["socket_errors"]:
        errors = row["socket_errors"].items()
        text += " · socket errors: " + ", ".join(f"{k} {v:,}" for k, v in errors)
    return text


LOAD_TARGETS = {
    "clicks": "clicks, 2 workers",
    "redirect": "redirect GET /r/{code}, 2 workers",
    "conversions": "conversions with attribution and rules, 2 workers",
}


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    pg = results["ceilings"].get("pgbench", {})
    pg_rps = pg.get("requests_per_s")
    bare = results["ceilings"]["bare"]
    target_of = {t["name"]: t for t in results["targets"]}
    git = results["git"]
    uncommitted = f" (+ {len(git['uncommitted'])} uncommitted files)" if git["uncommitted"] else ""
    lines = [
        f"# Benchmark results ({results['mode']} mode)",
        "",
        f"- date: {results['date']} · run time {results['total_seconds'] / 60:.1f} min · "
        f"`{results['command']}` · commit {git['commit']}{uncommitted}",
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['ram_gb']} GB RAM, "
        f"{m['postgres']}, kernel {m['kernel']}, Python {m['python']}; "
        "load generator and Postgres on the same box",
        f"- server: uvicorn {m['packages'].get('uvicorn', '?')} "
        "`--loop uvloop --http httptools --no-access-log`, "
        f"pool {results['server']['pool']}, log level {results['server']['log_level']}; "
        f"wrk {CONNECTIONS} connections, {WRK_THREADS} threads, {results['run_seconds']} s per "
        f"run after {results['warmup_seconds']} s warm-up",
        "",
        "| path | workers | req/s | x bare | x pgbench | p50 | p99 | 2xx vs stored | max RSS "
        "| target | met? |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if pg_rps:
        lines.append(
            f"| pgbench INSERT (click-shaped, {pg['clients']} clients) | — | {fmt(pg_rps)} | — "
            f"| 1.00 | {fmt(pg['p50_ms'], 2)} ms | {fmt(pg['p99_ms'], 2)} ms "
            f"| {pg['transactions']:,} tx / {pg['stored']:,} rows | — | ceiling | — |"
        )
    elif pg:
        lines.append(f"| pgbench INSERT | — | — | — | — | — | — | {pg.get('error')} | — | — | — |")
    for workers, b in sorted(bare.items()):
        lines.append(
            f"| bare FastAPI GET /ping | {workers} | {fmt(b['requests_per_s'])} | 1.00 "
            f"| {ratio(b['requests_per_s'], pg_rps)} | {fmt(b['p50_ms'], 2)} ms "
            f"| {fmt(b['p99_ms'], 2)} ms | — | {fmt(b['max_rss_mb'], 0)} MB | ceiling | — |"
        )
    order = list(LOAD_TARGETS)
    for row in sorted(results["load"], key=lambda r: (order.index(r["scenario"]), r["workers"])):
        ceiling = bare.get(str(row["workers"]), {}).get("requests_per_s")
        target = target_of.get(LOAD_TARGETS[row["scenario"]]) if row["workers"] == 2 else None
        lines.append(
            f"| {row['path']} | {row['workers']} | {fmt(row['requests_per_s'])} "
            f"| {ratio(row['requests_per_s'], ceiling)} | {ratio(row['requests_per_s'], pg_rps)} "
            f"| {fmt(row['p50_ms'], 2)} ms | {fmt(row['p99_ms'], 2)} ms | {check_text(row)} "
            f"| {fmt(row['max_rss_mb'], 0)} MB "
            f"| {target['target'] if target else '(judged at 2 workers)'} "
            f"| {met_text(target['met'] if target else None)} |"
        )
    for failure in results.get("failures", []):
        lines.append(
            f"| {failure['scenario']} | {failure['workers']} | FAILED: "
            f"{failure['error'].splitlines()[0][:200]} | | | | | | | | **no** |"
        )
    lines += render_cpu(results)
    lines += render_metrics(results, target_of)
    lines += ["", "| target | value | met? |", "|---|---|---|"]
    for t in results["targets"]:
        missed = [name for name, ok in t["parts"].items() if not ok]
        value = t["value"] + (f" (missed: {', '.join(missed)})" if missed else "")
        lines.append(f"| {t['name']}: {t['target']} | {value} | {met_text(t['met'])} |")
    noisy = [(r["scenario"], r["workers"], r["noise"]["others_share"]) for r in results["load"]]
    noisy += [("bare", int(w), b["noise"]["others_share"]) for w, b in bare.items()]
    if pg.get("noise"):
        noisy.append(("pgbench", 0, pg["noise"]["others_share"]))
    lines += [
        "",
        f"Load average at the start: {results['loadavg_at_start']} on {m['nproc']} cores; "
        f"{sum(results.get('postgres_sessions_at_start', {}).values())} Postgres sessions open "
        f"(max_connections {m['postgres_settings']['max_connections']}).",
    ]
    if noisy:
        name, workers, share = max(noisy, key=lambda n: n[2])
        lines.append(
            f"Noise: processes outside the benchmark used up to {share:.0%} of the machine's CPU "
            f"during a run ({name}, {workers} w); per run in latest.json (`noise`)."
        )
    mem = target_of.get("memory per worker under load")
    lines += [
        f"Memory: {mem['value'] if mem else '—'} RSS per worker under load (target ≤ 150 MB).",
        "",
        "req/s counts only answers that mean stored (201; 302 for the redirect; new conversions "
        "201, retries answered 200 not counted), over the measured run. 2xx vs stored: answers "
        "that mean stored / rows added, warm-up and run together. Rows stored without an answer "
        "(cut off when wrk stopped after the warm-up and after the run, or given up after 10 s) "
        "are allowed up to twice the connection count plus wrk's timeouts; an acknowledged row "
        "that is missing is a loss.",
    ]
    return "\n".join(lines) + "\n"


def render_cpu(results: dict[str, Any]) -> list[str]:
    """CPU per request: the figure that holds however busy the machine was."""
    rows = []
    for workers, b in sorted(results["ceilings"]["bare"].items()):
        rows.append(("bare FastAPI GET /ping", workers, b["cpu_ms_per_request"], b["noise"], None))
    order = list(LOAD_TARGETS)
    for row in sorted(results["load"], key=lambda r: (order.index(r["scenario"]), r["workers"])):
        rows.append(
            (
                row["path"],
                row["workers"],
                row["cpu_ms_per_request"],
                row["noise"],
                row.get("db_sessions_opened"),
            )
        )
    lines = [
        "",
        "CPU time per request the server handled (bare: the measured run; scenarios: warm-up, "
        "run and settling, per row stored or answer given), in the service's processes and in "
        "the Postgres backends of the bench database; and the share of the machine's CPU that "
        "other processes took during the measured run:",
        "",
        "| path | workers | server CPU ms / request | Postgres CPU ms / request "
        "| DB connections opened | others' CPU |",
        "|---|---|---|---|---|---|",
    ]
    for path, workers, cpu, noise, opened in rows:
        lines.append(
            f"| {path} | {workers} | {fmt(cpu['server'], 2)} | {fmt(cpu['postgres'], 2)} "
            f"| {fmt(opened)} | {noise['others_share']:.0%} |"
        )
    return lines


def render_metrics(results: dict[str, Any], target_of: dict[str, Any]) -> list[str]:
    metrics = results.get("metrics", {})
    if not metrics.get("endpoints"):
        return []
    d = results["dataset"]
    p = d["params"]
    lines = [
        "",
        f"Metrics over the generated data set '{d['name']}' ({p['clicks']:,} clicks, "
        f"{p['referrers']:,} referrers and codes, {p['referrals']:,} referrals, "
        f"{p['conversions']:,} conversions over {p['days']} days), range: the last "
        f"{metrics['days']} days; sequential requests, 2 workers.",
        "",
        "| endpoint | requests | p50 | p95 | raw recount (median) | speed-up | numbers = raw? "
        "| target | met? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in metrics["endpoints"].items():
        label = f"metrics {name}" + (" (top 100)" if name == "referrers" else "")
        target = target_of.get(label, {})
        if not entry.get("available"):
            lines.append(
                f"| {name} | not available | — | — | — | — | — | {target.get('target', '')} | — |"
            )
            continue
        numbers = entry.get("numbers")
        if numbers is None:
            same = "—"
        elif numbers["match"]:
            same = "yes"
        else:
            same = "NO: " + "; ".join(numbers["mismatches"])
        if "error" in entry:
            same += f" · error {entry['error'][:160]}"
        lines.append(
            f"| {name} | {entry.get('requests', 0)} | {fmt(entry.get('p50_ms'), 1)} ms "
            f"| {fmt(entry.get('p95_ms'), 1)} ms | {fmt(entry.get('raw_median_ms'), 1)} ms "
            f"| {fmt(entry.get('speedup'), 2)}x | {same} | {target.get('target', '')} "
            f"| {met_text(target.get('met'))} |"
        )
    return lines


# --------------------------------------------------------------------------- main


def metrics_only(
    args: argparse.Namespace,
    mode: Mode,
    workers: int,
    dataset: dict[str, Any],
    started: float,
    phases: dict[str, float],
) -> int:
    """`--only metrics`: the metrics phase alone, on a service with `workers` workers."""
    admin_key = cli_key("admin", KEY_PREFIX + "admin", [])
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode.name,
        "command": "python bench/run.py --only metrics" + (" --quick" if args.quick else ""),
        "git": git_state(),
        "machine": machine_info(),
        "loadavg_at_start": round(os.getloadavg()[0], 2),
        "dataset": dataset,
        "ceilings": {"bare": {}},
        "load": [],
        "phases_s": phases,
    }
    server = Server(
        f"service-{workers}w", ["app.main:create_app", "--factory"], workers, SERVICE_ENV
    )
    try:
        server.wait_ready("/healthz")
        t_metrics = time.monotonic()
        log("metrics endpoints over the data set")
        results["metrics"] = metrics_phase(server, admin_key, dataset, mode)
        phases["metrics"] = round(time.monotonic() - t_metrics, 1)
    finally:
        results["server_output"] = {f"{workers}w": server.stop(LOGS / "service-metrics.log")}
    db.close()
    names = {
        f"metrics {name}" + (" (top 100)" if name == "referrers" else "")
        for name in METRIC_TARGET_MS
    }
    results["targets"] = [t for t in evaluate(results) if t["name"] in names]
    results["total_seconds"] = round(time.monotonic() - started, 1)
    (RESULTS / "metrics.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    m = results["machine"]
    target_of = {t["name"]: t for t in results["targets"]}
    lines = [
        f"# Metrics benchmark ({mode.name} mode)",
        "",
        f"- date: {results['date']} · `{results['command']}` · commit {results['git']['commit']}",
        f"- machine: {m['nproc']} cores, {m['postgres']}; load average at the start "
        f"{results['loadavg_at_start']}",
        *render_metrics(results, target_of),
        "",
    ]
    markdown = "\n".join(lines)
    (RESULTS / "metrics.md").write_text(markdown)
    print()
    print(markdown)
    return 0


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run the benchmark (see bench/run.py's docstring)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data set and short runs (< 3 min)"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
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
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    worker_counts = [int(w) for w in args.workers.split(",")]
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase_done(name: str, since: float) -> float:
        phases[name] = round(time.monotonic() - since, 1)
        return time.monotonic()

    RESULTS.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    log(f"benchmark, {mode.name} mode")
    cores = os.cpu_count() or 1
    quiet_by = time.monotonic() + args.wait_quiet
    while os.getloadavg()[0] >= cores and time.monotonic() < quiet_by:
        log(f"load average {os.getloadavg()[0]:.1f} on {cores} cores: waiting for a quieter box")
        time.sleep(15)
    started = time.monotonic()  # the wait for a quiet box is not part of the run time
    load_at_start = round(os.getloadavg()[0], 2)
    if load_at_start >= cores:
        log(
            f"warning: load average {load_at_start} on {cores} cores before the run; other work "
            "on this machine will skew the figures (the ratios to the ceilings less so)"
        )
    ensure_tools()
    ensure_database()
    db.connect()
    sessions_at_start = {
        row["datname"] or "-": row["n"]
        for row in db.fetch("SELECT datname, count(*) AS n FROM pg_stat_activity GROUP BY 1")
    }
    t = phase_done("tools and database", started)

    log(f"data set '{mode.dataset}'")
    dataset = asyncio.run(generate.ensure_dataset(DSN, mode.dataset, mode.params, log))
    t = phase_done("data set", t)
    if args.only == "metrics":
        return metrics_only(args, mode, max(worker_counts), dataset, started, phases)

    log("scenario set-up")
    asyncio.run(purge_scenarios())
    admin_key = cli_key("admin", KEY_PREFIX + "admin", [])
    programs, keys = asyncio.run(create_programs(admin_key))
    codes = asyncio.run(insert_codes(list(programs.values()), mode.codes))
    publishable, secret = keys["publishable"], keys["secret"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-codes-"))
    tag = f"b{int(time.time())}"
    scenarios = [
        Scenario(
            "clicks",
            "POST /v1/clicks",
            "clicks.lua",
            programs["clicks"],
            zipf_file(scratch, "clicks", codes[programs["clicks"]]),
            [],
            "201",
            row_counter(programs["clicks"], ("clicks",)),
        ),
        Scenario(
            "redirect",
            "GET /r/{code}",
            "redirect.lua",
            programs["redirect"],
            zipf_file(scratch, "redirect", codes[programs["redirect"]]),
            [],
            "302",
            row_counter(programs["redirect"], ("clicks",)),
        ),
        Scenario(
            "conversions",
            "POST /v1/conversions",
            "conversions.lua",
            programs["conversions"],
            zipf_file(scratch, "conversions", codes[programs["conversions"]]),
            [],
            "201",
            row_counter(programs["conversions"], ("conversions", "rewards", "referrals")),
        ),
    ]
    scenarios[0].args = [str(scenarios[0].codes_file), publishable]
    scenarios[1].args = [str(scenarios[1].codes_file)]
    # The last argument (added per run) extends the tag, so event ids never repeat across runs.
    scenarios[2].args = [str(scenarios[2].codes_file), secret, programs["conversions"], tag]
    t = phase_done("scenario set-up", t)

    cpu = CpuAccount()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode.name,
        "command": "python bench/run.py" + (" --quick" if args.quick else ""),
        "git": git_state(),
        "machine": machine_info(),
        "server": {
            "uvicorn_flags": UVICORN_FLAGS,
            "env": SERVICE_ENV,
            "pool": "20 per worker, no overflow (defaults)",
            "log_level": "INFO (default)",
        },
        "loadavg_at_start": load_at_start,
        "postgres_sessions_at_start": sessions_at_start,
        "run_seconds": mode.seconds,
        "warmup_seconds": mode.warmup,
        "dataset": dataset,
        "ceilings": {"bare": {}},
        "load": [],
        "failures": [],
        "metrics": {},
        "phases_s": phases,
    }

    log(f"database ceiling: pgbench, {mode.pgbench_seconds}s")
    results["ceilings"]["pgbench"] = run_pgbench(
        mode.pgbench_seconds, programs["clicks"], mode.codes, cpu
    )
    log(f"  pgbench: {results['ceilings']['pgbench']}")
    t = phase_done("pgbench", t)

    for workers in worker_counts:
        bare = bare_run(workers, mode, cpu)
        results["ceilings"]["bare"][str(workers)] = bare
        log(f"  bare: {bare['requests_per_s']} req/s, p99 {bare['p99_ms']} ms")
        server = Server(
            f"service-{workers}w", ["app.main:create_app", "--factory"], workers, SERVICE_ENV
        )
        try:
            server.wait_ready("/healthz")
            for scenario in scenarios:
                try:
                    row = load_run(scenario, server, mode, cpu)
                except Exception as exc:  # one broken scenario must not hide the others
                    log(f"  {scenario.name}: FAILED: {exc}")
                    results["failures"].append(
                        {"scenario": scenario.name, "workers": workers, "error": str(exc)[:2000]}
                    )
                    continue
                results["load"].append(row)
                log(
                    f"  {scenario.name}: {row['requests_per_s']} req/s stored, "
                    f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                    f"check {'ok' if row['check']['ok'] else 'FAILED'} {row['check']}, "
                    f"other answers {row['unexpected_statuses']}, RSS {row['max_rss_mb']} MB"
                )
            if workers == max(worker_counts):
                t_metrics = time.monotonic()
                log("metrics endpoints over the data set")
                results["metrics"] = metrics_phase(server, admin_key, dataset, mode)
                phases["metrics"] = round(time.monotonic() - t_metrics, 1)
        finally:
            outcome = server.stop(LOGS / f"service-{workers}w.log")
            results.setdefault("server_output", {})[f"{workers}w"] = outcome
        t = phase_done(f"load runs, {workers} worker(s)", t)

    shutil.rmtree(scratch, ignore_errors=True)
    db.close()
    results["targets"] = evaluate(results)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    markdown = render_markdown(results)
    (RESULTS / "latest.md").write_text(markdown)
    print()
    print(markdown)
    log(
        f"done in {results['total_seconds'] / 60:.1f} min; "
        f"results in {RESULTS.relative_to(ROOT)}/latest.md"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
