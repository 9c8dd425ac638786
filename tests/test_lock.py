"""The lock files pin every dependency pyproject.toml names, each with hashes, and no index host.

`make lock` writes requirements/runtime.txt and requirements/dev.txt with `uv pip compile`;
the Makefile, .ci/run and the Dockerfile install from them with --require-hashes.
"""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"runtime": ROOT / "requirements" / "runtime.txt", "dev": ROOT / "requirements" / "dev.txt"}


def _name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement (`uvicorn[standard]>=0.30`)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _pins(path: Path) -> dict[str, list[str]]:
    """name → the hashes of its pinned line, from a `uv pip compile --generate-hashes` file."""
    pins: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==\S+", line):
            current = _name(match.group(1))
            pins[current] = []
        elif (hashed := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line)) and current:
            pins[current].append(hashed.group(1))
    return pins


def test_every_dependency_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = [_name(r) for r in project["project"]["dependencies"]]
    dev = [_name(r) for r in project["dependency-groups"]["dev"]]
    wanted = {"runtime": runtime, "dev": runtime + dev}
    for kind, path in LOCKS.items():
        pins = _pins(path)
        missing = [name for name in wanted[kind] if name not in pins]
        assert not missing, f"{path.name} lacks {missing}: run `make lock`"
        unhashed = [name for name, hashes in pins.items() if not hashes]
        assert not unhashed, f"{path.name} pins {unhashed} without hashes"


def test_the_runtime_lock_has_no_dev_tool_and_agrees_with_the_dev_lock() -> None:
    runtime, dev = (LOCKS[k].read_text() for k in ("runtime", "dev"))
    for tool in ("pytest", "mypy", "ruff", "playwright", "schemathesis"):
        assert not re.search(rf"^{tool}==", runtime, re.M), tool
        assert re.search(rf"^{tool}==", dev, re.M), tool
    pinned = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", runtime, re.M))
    in_dev = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", dev, re.M))
    differ = {name: (v, in_dev.get(name)) for name, v in pinned.items() if in_dev.get(name) != v}
    assert not differ, f"runtime and dev pin other versions: {differ}; run `make lock`"


def test_no_lock_names_a_host() -> None:
    for path in LOCKS.values():
        assert not re.search(r"https?://|--index-url|--extra-index-url", path.read_text())
