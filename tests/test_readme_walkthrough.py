"""The README walk-through runs as written, against a live server, so it can never drift.

The one shell block of README.md's "Walk-through" section runs under bash, unchanged but for its
`BASE=` line, which points at a real `referral-service serve` process on a free port of the test
database. `set -euo pipefail` and a `curl` that fails on an HTTP error status make any failing
step fail the run; `.venv/bin/referral-service` is the CLI of the interpreter running the tests.
Then the answers it printed are read step by step.
"""

import asyncio
import json
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient

from app.core.config import Settings
from tests.faults.server import ROOT, ServiceProcess, running_service, service_env

README = ROOT / "README.md"
BASE_LINE = re.compile(r"^BASE=http://localhost:8000 .*$", re.MULTILINE)
RUN_TIMEOUT_SECONDS = 120
# Stops at the first failing command; a curl that gets a 4xx or 5xx is a failing command.
PREAMBLE = """set -euo pipefail
curl() { command curl --fail-with-body --show-error "$@"; }
"""


def walkthrough_script() -> str:
    """The shell block of the README's walk-through section, as written."""
    text = README.read_text()
    section = text[text.index("\n## Walk-through\n") : text.index("\n## API\n")]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, "the walk-through has exactly one shell block"
    return blocks[0]


@pytest.fixture
async def service(
    client: AsyncClient, settings: Settings, tmp_path: Path
) -> AsyncIterator[ServiceProcess]:
    """`referral-service serve` on empty tables (`client` empties them), as `make run` serves."""
    env = service_env(settings.database_url)
    async with running_service(env, tmp_path / "service.log", via_cli=True) as process:
        yield process


def fake_checkout(folder: Path) -> None:
    """`.venv/bin/referral-service` in `folder`, running the CLI of this interpreter."""
    cli = folder / ".venv" / "bin" / "referral-service"
    cli.parent.mkdir(parents=True)
    cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app.cli "$@"\n')
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)


async def run_bash(script: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_SECONDS)
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def json_answers(stdout: str) -> list[dict[str, Any]]:
    """Every JSON object the walk-through printed, in order (curl prints no newline after one)."""
    decoder = json.JSONDecoder()
    answers, position = [], 0
    while (start := stdout.find("{", position)) != -1:
        answer, position = decoder.raw_decode(stdout, start)
        answers.append(answer)
    return answers


def test_the_walkthrough_sets_every_variable_it_uses() -> None:
    script = walkthrough_script()
    assigned = set(re.findall(r"^([A-Z_]+)=", script, re.MULTILINE))
    used = set(re.findall(r"\$\{?([A-Z_]+)", script))
    assert used - assigned == set()
    assert BASE_LINE.search(script), "the walk-through starts from BASE=http://localhost:8000"


async def test_the_readme_walkthrough_runs_as_written(
    service: ServiceProcess, settings: Settings, tmp_path: Path
) -> None:
    script = BASE_LINE.sub(f"BASE=http://localhost:{service.port}", walkthrough_script(), count=1)
    fake_checkout(tmp_path)
    env = service_env(settings.database_url)
    env["PYTHONPATH"] = str(ROOT)

    status, stdout, stderr = await run_bash(PREAMBLE + script, tmp_path, env)

    assert status == 0, (
        f"the walk-through failed (exit {status}):\n{stdout}\n{stderr}\n{service.log_tail()}"
    )
    answers = json_answers(stdout)
    referrer, vanity, lookup, redemption, rule, attribution, refund, rewards, balance, summary = (
        answers
    )
    code = referrer["default_code"]["code"]
    # Links point at the address served: make run PORT=8001 gives :8001 links.
    assert referrer["default_code"]["link"] == f"http://localhost:{service.port}/r/{code}"
    assert vanity["code"] == "ALICE10" and vanity["referrer_id"] == referrer["id"]
    locations = re.findall(r"https://shop\.example\.com/welcome\?\S+", stdout)
    assert len(locations) == 1, stdout
    location = locations[0]
    assert f"ref={code}" in location and "click_id=" in location
    assert lookup["valid"] is True
    assert redemption["customer_id"] == "cust_77" and redemption["click_id"] in location
    assert rule["amount"] == "10.00" and rule["hold_days"] == 14
    assert attribution["status"] == "attributed"
    assert attribution["winner"]["referrer_id"] == referrer["id"]
    assert refund["refunded_total"] == "20.00"
    assert [reward["amount"] for reward in rewards["data"]] == ["10.00"]
    assert balance["balances"] == [
        {
            "unit": "USD",
            "pending": "10.00",
            "approved": "0.00",
            "paid": "0.00",
            "owed": "10.00",
            "payable": "0.00",
        }
    ]
    # The browser user agent makes the click a real one: a curl click would be a bot.
    assert summary["clicks"] == 1 and summary["unique_clicks"] == 1
    assert summary["conversions"] == 1 and summary["revenue"] == "60.00"
