"""`referral-service`: serve, migrate, keys create|revoke|list|bootstrap, demo, rollups.

Every command but `migrate` first checks that the database is migrated, without creating it:
an unmigrated database is one line on stderr (where it looked, how to fix it), never a
traceback, and a SQLite file is never made as a side effect of looking.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TypeVar
from uuid import UUID

from pydantic import ValidationError
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.core.access import OPERATOR, KeyKind
from app.core.config import Settings, served_base_url
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import AppError
from app.keys import service as keys
from app.keys.models import ApiKey

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class DatabaseNotReady(Exception):
    """The database cannot be used as it is; the message says where it looked and what to do."""


def alembic_config(database_url: str) -> "object":
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(settings: Settings, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(settings.database_url), revision)  # type: ignore[arg-type]


def describe_database(url: str) -> str:
    """The URL without its password; a SQLite file also by its absolute path."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return repr(url)
    shown = parsed.render_as_string(hide_password=True)
    path = _sqlite_file(url)
    return f"{shown} ({path})" if path is not None else shown


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).resolve()


def latest_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())  # type: ignore[arg-type]


def require_migrated(settings: Settings) -> None:
    """Raise DatabaseNotReady unless the database exists and is at the latest migration."""
    url = settings.database_url
    where = describe_database(url)
    other = "or set REFERRAL_DATABASE_URL to the service's database"
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.exists():
        raise DatabaseNotReady(
            f"no database at {where}: run `referral-service migrate` to create it, {other}"
        )
    current = asyncio.run(_current_revisions(url, settings))
    latest = latest_revisions()
    if not current:
        raise DatabaseNotReady(
            f"the database {where} is not migrated: run `referral-service migrate`, {other}"
        )
    if current != latest:
        at, head = ", ".join(sorted(current)), ", ".join(sorted(latest))
        raise DatabaseNotReady(
            f"the database {where} is at migration {at}, not the latest ({head}): "
            "run `referral-service migrate`"
        )


async def _current_revisions(url: str, settings: Settings) -> set[str]:
    # SQLite without the service's WAL pragma: looking must not write to the file.
    engine = create_async_engine(url) if url.startswith("sqlite") else create_engine(url, settings)
    try:
        async with engine.connect() as connection:
            migrated = await connection.run_sync(
                lambda sync: inspect(sync).has_table("alembic_version")
            )
            if not migrated:
                return set()
            rows = await connection.scalars(text("SELECT version_num FROM alembic_version"))
            return set(rows)
    except (OSError, DBAPIError, TimeoutError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseNotReady(
            f"cannot reach the database {describe_database(url)}: {reason}"
        ) from None
    finally:
        await engine.dispose()


def run_in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def runner() -> T:
        engine = create_engine(settings.database_url, settings)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(runner())


def create_key(settings: Settings, kind: str, program_ids: list[UUID], name: str | None) -> str:
    async def work(session: AsyncSession) -> str:
        created = await keys.create_key(session, KeyKind(kind), program_ids or None, name)
        return created.secret

    return run_in_session(settings, work)


def bootstrap_admin(settings: Settings) -> str | None:
    """An admin key when the database has no key yet; None otherwise."""

    async def work(session: AsyncSession) -> str | None:
        if await session.scalar(select(ApiKey.id).limit(1)) is not None:
            return None
        return (await keys.create_key(session, KeyKind.ADMIN, None, "first admin key")).secret

    return run_in_session(settings, work)


def print_bootstrap(settings: Settings) -> None:
    first_key = bootstrap_admin(settings)
    if first_key is None:
        print("API keys exist already. Make another with:")
        print("  referral-service keys create --kind admin")
    else:
        print("Your first admin API key (shown once; keep it):")
        print(first_key)


def run_demo(settings: Settings, *, if_empty: bool) -> None:
    """Seed the demo program unless it exists; print its id and a dashboard key (last line)."""
    from app import demo

    async def work(session: AsyncSession) -> demo.DemoProgram | None:
        if if_empty and await demo.has_programs(session):
            return None
        if await demo.find_demo_program(session) is None:
            print(f"Seeding a demo program: {demo.DEMO_DAYS} days of referral traffic…", flush=True)
        return await demo.ensure_demo(session, settings)

    result = run_in_session(settings, work)
    if result is None:
        print("The database has programs already: no demo seeded.")
        print("  `referral-service demo` seeds it anyway (once) and prints a dashboard key.")
        return
    if result.created:
        print(
            f"Seeded {demo.DEMO_PROGRAM_NAME!r}: {result.clicks} clicks and "
            f"{result.conversions} orders over the last {demo.DEMO_DAYS} days."
        )
    else:
        print(f"{demo.DEMO_PROGRAM_NAME!r} exists already; nothing was added.")
    print(f"program id: {result.program_id}")
    print(f"dashboard:  {settings.public_base_url.rstrip('/')}/dashboard")
    print("A secret key limited to the demo program (shown once; paste it into the dashboard):")
    print(result.dashboard_key)


def rebuild_rollups(settings: Settings, program_id: UUID | None) -> None:
    """Recount the metrics rollups (after a load with triggers off, e.g. COPY as a replica)."""
    from app.metrics import rollups

    if settings.database_url.startswith("sqlite"):
        print("SQLite counts metrics from the raw events: there are no rollups to rebuild.")
        return

    async def runner() -> None:
        # Its own engine, without the service's statement timeout: millions of events take minutes.
        engine = create_async_engine(settings.database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                await rollups.rebuild(session, program_id)
        finally:
            await engine.dispose()

    asyncio.run(runner())
    print(f"metrics rollups rebuilt for {program_id or 'every program'}")


def key_table(api_keys: Sequence[ApiKey]) -> str:
    """The keys as an aligned text table, one row per key, never a secret."""
    header = ("ID", "PREFIX", "KIND", "STATE", "CREATED", "PROGRAMS", "NAME")
    rows = [header]
    for api_key in api_keys:
        rows.append(
            (
                str(api_key.id),
                api_key.prefix,
                api_key.kind,
                "revoked" if api_key.revoked_at else "active",
                api_key.created_at.strftime("%Y-%m-%d %H:%M"),
                ",".join(map(str, api_key.program_ids)) if api_key.program_ids else "all",
                api_key.name or "",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _version() -> str:
    try:
        return metadata.version("referral-service")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="referral-service",
        description="Referral tracking service: serve the API, migrate the database, manage "
        "API keys, seed a demo. Settings come from REFERRAL_* variables or ./.env; the database "
        "is REFERRAL_DATABASE_URL (default: ./referrals.db in the current folder).",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do")

    serve = commands.add_parser("serve", help="run the HTTP service with uvicorn")
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; each has its pool)"
    )
    serve.add_argument(
        "--setup",
        action="store_true",
        help="first migrate, print a first admin key if there is none and seed the demo into a "
        "database with no program (what `make run` does)",
    )

    commands.add_parser("migrate", help="apply database migrations (alembic upgrade head)")

    key_parser = commands.add_parser("keys", help="manage API keys")
    key_parser.set_defaults(command_parser=key_parser)
    key_commands = key_parser.add_subparsers(
        dest="keys_command", metavar="KEYS_COMMAND", help="what to do with keys"
    )
    create = key_commands.add_parser("create", help="create a key; it is printed once, last line")
    create.add_argument(
        "--kind",
        required=True,
        choices=[kind.value for kind in KeyKind],
        help="admin: everything; secret: a merchant backend; publishable: a storefront widget",
    )
    create.add_argument(
        "--program",
        action="append",
        type=UUID,
        default=[],
        metavar="ID",
        help="limit the key to this program (repeat for several; default: every program)",
    )
    create.add_argument("--name", help="a label shown by `keys list`")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", help="the key's id or its displayed prefix (rk_sec_xxxxx)")
    key_commands.add_parser("list", help="list keys as a table (never the secrets)")
    key_commands.add_parser("bootstrap", help="create a first admin key if there is none")

    demo_parser = commands.add_parser(
        "demo", help="seed a demo program (once) and print a dashboard key for it"
    )
    demo_parser.add_argument(
        "--if-empty", action="store_true", help="do nothing when the database has any program"
    )

    rollups_parser = commands.add_parser(
        "rollups", help="recount the metrics rollups from the raw events (Postgres)"
    )
    rollups_parser.add_argument(
        "--program", type=UUID, metavar="ID", help="only this program (default: all)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "keys" and args.keys_command is None:
        args.command_parser.print_help()
        return 0
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(
            f"error: invalid settings (REFERRAL_* variables or .env): {problems}", file=sys.stderr
        )
        return 2
    try:
        return _dispatch(args, settings)
    except DatabaseNotReady as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AppError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        asyncio.run(_current_revisions(settings.database_url, settings))  # reachable at all?
        migrate(settings)
        print(f"the database {describe_database(settings.database_url)} is at the latest migration")
        return 0
    if args.command == "serve":
        return _serve(args, settings)
    require_migrated(settings)
    if args.command == "demo":
        run_demo(settings, if_empty=args.if_empty)
    elif args.command == "rollups":
        rebuild_rollups(settings, args.program)
    elif args.keys_command == "create":
        secret = create_key(settings, args.kind, args.program, args.name)
        article = "an" if args.kind == KeyKind.ADMIN else "a"
        scope = f" limited to {len(args.program)} program(s)" if args.program else ""
        print(f"Created {article} {args.kind} key{scope}. Store it now: it is not shown again.")
        print(secret)
    elif args.keys_command == "revoke":
        revoked = run_in_session(settings, lambda s: keys.revoke_key(s, args.key))
        print(f"revoked {revoked.prefix} ({revoked.id})")
    elif args.keys_command == "list":
        listed = run_in_session(settings, lambda s: keys.list_keys(s, OPERATOR))
        if not listed:
            print("No API keys yet. Make one with: referral-service keys create --kind admin")
        else:
            print(key_table(listed))
    elif args.keys_command == "bootstrap":
        print_bootstrap(settings)
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    # Links point at the address served unless REFERRAL_PUBLIC_BASE_URL (or .env) says otherwise;
    # the variable reaches the app that uvicorn builds, and every worker process.
    if "public_base_url" not in settings.model_fields_set:
        os.environ["REFERRAL_PUBLIC_BASE_URL"] = served_base_url(args.host, args.port)
        settings = Settings()
    if args.setup:
        migrate(settings)
        print_bootstrap(settings)
        run_demo(settings, if_empty=True)
    else:
        require_migrated(settings)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # The app reads X-Forwarded-For itself, from REFERRAL_FORWARDED_ALLOW_IPS (app.main).
        proxy_headers=False,
        access_log=False,  # uvicorn's access log carries client IPs
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
