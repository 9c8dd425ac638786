"""The machine the benchmark runs on: the tools it needs, how busy it is, what it is."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.config import ROOT
from bench.console import log
from bench.database import Monitor

PACKAGES = ("fastapi", "uvicorn", "uvloop", "httptools", "sqlalchemy", "asyncpg", "pydantic")


def ensure_tools() -> None:
    """wrk, pgbench, psql and HAProxy (the replicas' load balancer), installed from Debian's
    packages when missing."""
    missing = {
        "wrk": ["wrk"],
        "haproxy": ["haproxy"],
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


def wait_for_quiet(seconds: float) -> float:
    """Wait up to `seconds` for the 1-minute load average to drop below the core count;
    the load average at the end, with a warning when the box is still busy."""
    cores = os.cpu_count() or 1
    quiet_by = time.monotonic() + seconds
    while os.getloadavg()[0] >= cores and time.monotonic() < quiet_by:
        log(f"load average {os.getloadavg()[0]:.1f} on {cores} cores: waiting for a quieter box")
        time.sleep(15)
    load = round(os.getloadavg()[0], 2)
    if load >= cores:
        log(
            f"warning: load average {load} on {cores} cores before the run; other work "
            "on this machine will skew the figures (the ratios to the ceilings less so)"
        )
    return load


def machine_info(monitor: Monitor) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    memory = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    mem_kb = int(memory[1]) if memory else 0
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    wrk_text = wrk.stdout or wrk.stderr
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True)
    pg_settings = {
        name: monitor.value(f"SHOW {name}")
        for name in ("shared_buffers", "synchronous_commit", "max_connections", "work_mem")
    }
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model[1].strip() if model else platform.processor(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": monitor.value("SELECT version()").split(" on ")[0],
        "postgres_settings": pg_settings,
        "wrk": wrk_text.splitlines()[0].strip() if wrk_text else "?",
        "haproxy": " ".join(haproxy.stdout.split()[:3]) if haproxy.stdout else "?",
        "packages": versions,
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}
