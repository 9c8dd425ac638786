"""What processes cost while a run goes on: RSS of the workers, CPU of everyone, from /proc."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Self

from bench.config import DATABASE

# Per process: (user + system CPU ticks, start time); the start time tells a reused pid apart.
Ticks = dict[int, tuple[int, int]]


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

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def max_mb(self) -> float | None:
        return round(max(self.max_kb.values()) / 1024, 1) if self.max_kb else None

    def mb_per_worker(self) -> dict[str, float]:
        return {str(pid): round(kb / 1024, 1) for pid, kb in self.max_kb.items()}


class CpuAccount:
    """How much of the machine's CPU went to processes that are not part of the benchmark.

    A noise gauge: other sessions share this box. Ours: the server, wrk/pgbench, the load
    balancer (HAProxy) in a replicas run, and the Postgres backends of the bench database;
    Postgres' own helpers count as ours too. `shares` splits the machine's CPU among the
    service, Postgres, wrk, HAProxy and the others: where a run stops scaling.
    """

    HZ = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def ours(pid: int, command: str) -> bool:
        if pid == os.getpid() or command.startswith(("wrk", "pgbench", "psql", "haproxy")):
            return True
        if command.startswith("postgres: "):
            parts = command.split()
            if len(parts) >= 5 and "(" in parts[4]:  # a client backend: user, database, host(port)
                return parts[3] == DATABASE
            if "autovacuum worker" in command:
                return command.rstrip().endswith(DATABASE)
            return True  # WAL writer, checkpointer, ...: shared by all, counted as ours
        return "postgresql" in command and " -D " in command  # the postmaster

    # Not a pid: the machine's (idle, total) ticks from /proc/stat, in the same snapshot.
    MACHINE = 0

    @staticmethod
    def machine_ticks() -> tuple[int, int]:
        """(idle + iowait, all) ticks of every CPU since boot."""
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return fields[3] + fields[4], sum(fields)

    @classmethod
    def snapshot(cls) -> Ticks:
        ticks = {cls.MACHINE: cls.machine_ticks()}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                ticks[int(entry)] = (int(fields[11]) + int(fields[12]), int(fields[19]))
        return ticks

    def measure(
        self, before: Ticks, seconds: float, servers: frozenset[int] | set[int] = frozenset()
    ) -> dict[str, Any]:
        """CPU used since `before`: shares of the machine (ours, others'), and the seconds
        spent in the `servers` processes and in the bench database's Postgres backends."""
        after = self.snapshot()
        ours = others = server = database = load = balancer = 0
        # Idle from the kernel's own count: processes that came and went between the two
        # snapshots are missing from the per-process figures, never from this one.
        idle_before, all_before = before.get(self.MACHINE, (0, 0))
        idle_after, all_after = after.pop(self.MACHINE)
        idle = (idle_after - idle_before) / max(1, all_after - all_before) if all_before else None
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
            elif command.startswith(("wrk", "pgbench")):
                load += used
            elif command.startswith("haproxy"):
                balancer += used
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
            # Shares of the machine's CPU; "postgres" is the bench database's backends only.
            "shares": {
                "service": round(server / capacity, 3),
                "postgres": round(database / capacity, 3),
                "load_generator": round(load / capacity, 3),
                "haproxy": round(balancer / capacity, 3),
                "others": round(others / capacity, 3),
            },
            "idle_share": None if idle is None else round(idle, 3),
        }


def per_request(noise: dict[str, Any], requests: int) -> dict[str, float | None]:
    """Server and Postgres CPU milliseconds per answered request during the measured run."""
    if not requests:
        return {"server": None, "postgres": None}
    return {
        "server": round(noise["server_cpu_s"] * 1000 / requests, 3),
        "postgres": round(noise["postgres_cpu_s"] * 1000 / requests, 3),
    }
