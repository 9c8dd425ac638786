"""The servers under load: uvicorn processes, started and stopped by process group.

The load runners see a server only through `Service`: an address, the pids to sample and a
log. One uvicorn with N workers is one; replicas behind a local HAProxy (bench/balancer.py)
are another, measured by the same runners.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from bench.config import BENCH, BIN, ROOT, SERVICE_ENV, UVICORN_FLAGS
from bench.sampling import children_of, cmdline


class Service(Protocol):
    """What a load run needs of the thing it loads."""

    name: str
    url: str
    workers: int  # worker processes in all: the runs are labelled and judged by it

    def worker_pids(self) -> list[int]:
        """The processes that answer requests: their RSS is sampled."""
        ...

    def all_pids(self) -> set[int]:
        """Every process of the service: their CPU is the server's CPU."""
        ...

    def log_tail(self, lines: int) -> str: ...


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def summarize_problems(lines: list[str]) -> dict[str, int]:
    """Warning and error lines by kind (level, message, last line of the exception), most
    frequent first."""
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

    @classmethod
    def service(cls, workers: int) -> Server:
        """The referral service with the benchmark's settings."""
        return cls(
            f"service-{workers}w", ["app.main:create_app", "--factory"], workers, SERVICE_ENV
        )

    @classmethod
    def bare(cls, workers: int) -> Server:
        """The framework ceiling (bench/bare_app.py), served exactly like the service."""
        return cls(f"bare-{workers}w", ["bare_app:app", "--app-dir", str(BENCH)], workers, {})

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
        """Stop the process group; its warnings and errors by kind, the log kept if asked."""
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
