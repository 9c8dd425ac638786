"""`referral-service`: serve, migrate, keys create|revoke|list|bootstrap, demo, rollups."""

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import OPERATOR, KeyKind
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import AppError
from app.keys import service as keys
from app.keys.models import ApiKey

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


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
    from sqlalchemy.ext.asyncio import create_async_engine

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="referral-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)

    commands.add_parser("migrate", help="apply database migrations (alembic upgrade head)")

    key_parser = commands.add_parser("keys", help="manage API keys")
    key_commands = key_parser.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; it is printed once, last line")
    create.add_argument("--kind", required=True, choices=sorted(keys.KIND_PREFIXES))
    create.add_argument("--program", action="append", type=UUID, default=[], metavar="ID")
    create.add_argument("--name")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", help="the key's id or its displayed prefix (rk_sec_xxxxx)")
    key_commands.add_parser("list", help="list keys (never the secrets)")
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
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        return _dispatch(args, settings)
    except AppError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        import uvicorn

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
    elif args.command == "migrate":
        migrate(settings)
        print("database is at the latest migration")
    elif args.command == "demo":
        run_demo(settings, if_empty=args.if_empty)
    elif args.command == "rollups":
        rebuild_rollups(settings, args.program)
    elif args.keys_command == "create":
        secret = create_key(settings, args.kind, args.program, args.name)
        print(f"Created a {args.kind} key. Store it now: it is not shown again.")
        print(secret)
    elif args.keys_command == "revoke":
        revoked = run_in_session(settings, lambda s: keys.revoke_key(s, args.key))
        print(f"revoked {revoked.prefix} ({revoked.id})")
    elif args.keys_command == "list":
        for api_key in run_in_session(settings, lambda s: keys.list_keys(s, OPERATOR)):
            state = "revoked" if api_key.revoked_at else "active"
            print(api_key.id, api_key.prefix, api_key.kind, state, api_key.program_ids or "all")
    elif args.keys_command == "bootstrap":
        first_key = bootstrap_admin(settings)
        if first_key is None:
            print("API keys exist already. Make another with:")
            print("  referral-service keys create --kind admin")
        else:
            print("Your first admin API key (shown once; keep it):")
            print(first_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
