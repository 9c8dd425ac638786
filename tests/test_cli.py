"""`referral-service`: what a newcomer meets on the command line.

Run in-process through app.cli.main(argv) on a SQLite file of the test's own (the CLI reads its
settings from the environment), and once as a real process from another folder. The served port
and the links' base URL are checked against a live `referral-service serve`.
"""

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from app.cli import build_parser, latest_revisions, main, migrate
from app.core.config import Settings, served_base_url
from tests.factories import make_key
from tests.faults.server import ROOT, free_port, running_service, service_env


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Another folder, with no REFERRAL_* setting: the CLI as run from outside the checkout."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(f"REFERRAL_{name.upper()}", raising=False)
    return tmp_path


@pytest.fixture
def migrated(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database of this test's own, named by REFERRAL_DATABASE_URL."""
    url = f"sqlite+aiosqlite:///{elsewhere / 'cli.db'}"
    migrate(Settings(database_url=url))
    monkeypatch.setenv("REFERRAL_DATABASE_URL", url)
    return url


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert lines[0].startswith("error: ")
    return lines[0]


def test_from_another_folder_it_says_there_is_no_database_and_creates_none(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list"]) == 1

    message = one_line_error(capsys)
    assert str(elsewhere / "referrals.db") in message  # where it looked
    assert "sqlite+aiosqlite:///./referrals.db" in message
    assert "referral-service migrate" in message and "REFERRAL_DATABASE_URL" in message
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    "argv", [["keys", "create", "--kind", "admin"], ["keys", "bootstrap"], ["demo"], ["serve"]]
)
def test_every_database_command_refuses_an_unmigrated_database(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    (elsewhere / "referrals.db").touch()  # an empty SQLite file: a database with no table

    assert main(argv) == 1

    message = one_line_error(capsys)
    assert "is not migrated" in message and "referral-service migrate" in message
    assert (elsewhere / "referrals.db").stat().st_size == 0


def test_a_database_behind_the_latest_migration_is_named_with_its_revision(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{elsewhere / 'old.db'}"
    migrate(Settings(database_url=url), "0001")
    monkeypatch.setenv("REFERRAL_DATABASE_URL", url)
    capsys.readouterr()  # alembic's log lines

    assert main(["keys", "list"]) == 1

    message = one_line_error(capsys)
    assert f"is at migration 0001, not the latest ({', '.join(sorted(latest_revisions()))})" in (
        message
    )


def test_an_unreachable_database_is_one_line_without_its_password(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nobody listens there
    monkeypatch.setenv(
        "REFERRAL_DATABASE_URL", f"postgresql+asyncpg://shop:s3cret@127.0.0.1:{port}/referrals"
    )

    assert main(["keys", "list"]) == 1
    message = one_line_error(capsys)
    assert f"cannot reach the database postgresql+asyncpg://shop:***@127.0.0.1:{port}/" in message
    assert "s3cret" not in message

    assert main(["migrate"]) == 1
    assert "s3cret" not in one_line_error(capsys)


def test_migrate_says_which_database_it_migrated(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate"]) == 0

    out = capsys.readouterr().out
    assert f"sqlite+aiosqlite:///./referrals.db ({elsewhere / 'referrals.db'})" in out
    assert "is at the latest migration" in out
    assert main(["keys", "list"]) == 0


def test_a_real_process_from_another_folder_fails_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in service_env("unused").items() if not k.startswith("REFERRAL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no database at" in done.stderr
    assert not (tmp_path / "referrals.db").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"referral-service {metadata.version('referral-service')}\n"


def test_a_bare_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: referral-service")
    for command in ("serve", "migrate", "keys", "demo", "rollups"):
        assert f"    {command} " in out

    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: referral-service keys")
    for command in ("create", "revoke", "list", "bootstrap"):
        assert f"    {command} " in out


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_every_command_and_option_has_help() -> None:
    missing = [
        f"{parser.prog} {action.dest}"
        for parser in _parsers(build_parser())
        for action in parser._actions
        if not action.help
    ]
    subcommands = [
        f"{action.dest}: {name}"
        for parser in _parsers(build_parser())
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
        if name not in {choice.dest for choice in action._choices_actions}
    ]
    assert missing == [] and subcommands == []


def test_keys_create_says_which_kind_it_created_and_prints_the_key_last(
    migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind, prefix, said in [
        ("admin", "rk_adm_", "Created an admin key."),
        ("secret", "rk_sec_", "Created a secret key."),
        ("publishable", "rk_pub_", "Created a publishable key."),
    ]:
        assert main(["keys", "create", "--kind", kind]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(said)
        assert lines[-1].startswith(prefix) and len(lines[-1]) > 40


def test_keys_list_is_an_aligned_table_without_secrets(
    migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list"]) == 0
    assert "No API keys yet" in capsys.readouterr().out

    main(["keys", "create", "--kind", "admin", "--name", "ops team"])
    main(["keys", "create", "--kind", "publishable"])
    admin_key = capsys.readouterr().out.splitlines()[1]
    main(["keys", "revoke", admin_key[:12]])
    capsys.readouterr()

    assert main(["keys", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "PREFIX", "KIND", "STATE", "CREATED", "PROGRAMS", "NAME"]
    assert len(lines) == 3
    admin, publishable = lines[1], lines[2]
    for column in ("PREFIX", "KIND", "STATE", "CREATED", "PROGRAMS"):
        start = lines[0].index(column)
        assert admin[start - 2 : start] == "  " and admin[start] != " ", column
        assert publishable[start - 2 : start] == "  " and publishable[start] != " ", column
    assert admin.split()[1:4] == [admin_key[:12], "admin", "revoked"]
    assert admin.endswith("all       ops team")
    assert publishable.split()[2:4] == ["publishable", "active"]
    assert admin_key not in "\n".join(lines)


@pytest.mark.parametrize(
    ("host", "port", "base_url"),
    [
        ("0.0.0.0", 8001, "http://localhost:8001"),
        ("127.0.0.1", 8000, "http://localhost:8000"),
        ("::", 9000, "http://localhost:9000"),
        ("referrals.internal", 8080, "http://referrals.internal:8080"),
        ("192.0.2.10", 80, "http://192.0.2.10:80"),
        ("2001:db8::1", 8000, "http://[2001:db8::1]:8000"),
    ],
)
def test_the_default_base_url_is_the_address_served(host: str, port: int, base_url: str) -> None:
    assert served_base_url(host, port) == base_url


async def _referrer_link(base_url: str, admin_key: str) -> str:
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as http:
        program = await http.post(
            "/v1/programs",
            json={"name": "Links", "landing_url": "https://shop.example.com/", "currency": "USD"},
        )
        assert program.status_code == 201, program.text
        referrer = await http.post(
            f"/v1/programs/{program.json()['id']}/referrers", json={"external_id": "cust_1"}
        )
        assert referrer.status_code == 201, referrer.text
        return str(referrer.json()["default_code"]["link"])


@pytest.mark.parametrize("configured", [None, "https://refer.example.com"])
async def test_links_point_at_the_served_port_unless_the_base_url_is_set(
    app: object,
    client: httpx.AsyncClient,
    settings: Settings,
    tmp_path: Path,
    configured: str | None,
) -> None:
    env = service_env(settings.database_url)
    if configured is not None:
        env["REFERRAL_PUBLIC_BASE_URL"] = configured
    key = await make_key(app)
    async with running_service(env, tmp_path / "service.log", via_cli=True) as service:
        link = await _referrer_link(service.base_url, key)

    expected = configured or f"http://localhost:{service.port}"
    assert link.startswith(f"{expected}/r/")


def test_make_run_passes_port_to_the_service() -> None:
    done = subprocess.run(
        ["make", "-n", "run", "PORT=8001", "UV=true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert ".venv/bin/referral-service serve --setup --host 0.0.0.0 --port 8001" in done.stdout
