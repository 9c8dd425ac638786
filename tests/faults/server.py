"""A real uvicorn process for the fault tests: start it, wait for /healthz, SIGKILL it, restart it.

Everything stays on loopback. The process runs in its own process group, so killing the group
takes any child with it; `running_service` always kills it, whatever the test did, and the
process dies with the test process too (PR_SET_PDEATHSIG), should pytest itself be killed.
"""

import asyncio
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when the test process dies (Linux), so that even a
    killed pytest leaves no service behind."""
    with suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str, **settings: object) -> dict[str, str]:
    """The environment of a service process: this one's, minus any REFERRAL_* leaking in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("REFERRAL_")}
    values: dict[str, object] = {
        "database_url": database_url,
        "environment": "test",
        "rate_limits_enabled": "false",
        "housekeeping_interval_seconds": 0,
        "ip_hash_salt": "fault-test-salt",
    }
    values.update(settings)
    env.update({f"REFERRAL_{name.upper()}": str(value) for name, value in values.items()})
    return env


class ServiceProcess:
    """One uvicorn process serving `app.main:create_app` on a fixed loopback port.

    Started as the Dockerfile does (uvicorn's command line), or with `via_cli` as
    `referral-service serve` does.
    """

    def __init__(
        self, env: dict[str, str], log_path: Path, port: int | None = None, *, via_cli: bool = False
    ) -> None:
        self.env = env
        self.via_cli = via_cli
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the service is not running"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the process and wait until /healthz answers (the port may be the last one's)."""
        assert not self.running, "the service is running already"
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} ---\n".encode())
        self._log.flush()
        self._process = await asyncio.create_subprocess_exec(
            *self._command(),
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches it and its children
            preexec_fn=_die_with_parent,
        )
        self.starts += 1
        await self.wait_healthy()

    def _command(self) -> list[str]:
        if self.via_cli:
            return [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--no-proxy-headers",  # as in the Dockerfile: the app reads X-Forwarded-For itself
            "--log-level",
            "warning",
        ]

    async def wait_healthy(self, within: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"the service exited at start:\n{self.log_tail()}")
                with suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise TimeoutError(f"no answer on /healthz in {within} s:\n{self.log_tail()}")

    async def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown, no cleanup."""
        await self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT_SECONDS)

    async def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it has not exited in time."""
        if not self.running:
            return
        try:
            await self._signal_and_wait(signal.SIGTERM, STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.kill()

    async def _signal_and_wait(self, signum: int, within: float) -> None:
        if not self.running:
            return
        assert self._process is not None
        with suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)
        await asyncio.wait_for(self._process.wait(), within)

    def kill_now(self) -> None:
        """Last-resort cleanup that needs no event loop; never signals a reaped pid."""
        if self._process is not None and self._process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def rss_kib(self) -> int:
        """The resident set size of the process, from /proc/<pid>/status (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS line in /proc/<pid>/status")

    def log_tail(self, lines: int = 60) -> str:
        if self._log is not None:
            self._log.flush()
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@asynccontextmanager
async def running_service(
    env: dict[str, str], log_path: Path, port: int | None = None, *, via_cli: bool = False
) -> AsyncIterator[ServiceProcess]:
    """A started service that is always killed on the way out, even when the test failed."""
    service = ServiceProcess(env, log_path, port, via_cli=via_cli)
    try:
        await service.start()
        yield service
    finally:
        try:
            await service.stop()
        finally:
            service.kill_now()
            service.close_log()


async def create_admin_key(database_url: str) -> str:
    """`referral-service keys create --kind admin`; the key is the last line it prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "keys",
        "create",
        "--kind",
        "admin",
        "--name",
        "fault tests",
        cwd=ROOT,
        env=service_env(database_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 0, stderr.decode(errors="replace")
    return stdout.decode().strip().splitlines()[-1]
