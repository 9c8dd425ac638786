"""One email dispatch round in a process of its own, for the crash tests (which SIGKILL it).

Usage: python -m tests.email_dispatch_round DATABASE_URL SMTP_PORT
"""

import asyncio
import sys

from app.core.db import create_engine, create_sessionmaker
from app.emails.dispatcher import EmailDispatcher
from tests.settings import mail_settings_for_tests


async def main(database_url: str, smtp_port: int) -> None:
    settings = mail_settings_for_tests(smtp_port, database_url=database_url)
    engine = create_engine(database_url, settings)
    try:
        handled = await EmailDispatcher(create_sessionmaker(engine), settings).run_once()
        print(f"handled {handled}", flush=True)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
