"""Write the app's OpenAPI schema to openapi/openapi.json, or check that the file is current.

`python -m app.http.openapi` regenerates the committed schema (what `make openapi` runs);
`python -m app.http.openapi --check` exits 1 when the file differs from the app's schema.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.main import create_app

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def build_schema() -> dict[str, Any]:
    """The OpenAPI document of an app built with default settings."""
    # Building the app makes an engine but never connects, so no database is needed.
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    return app.openapi()


def render_schema(schema: dict[str, Any]) -> str:
    """The schema as committed: stable key order, so diffs show only real changes."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.http.openapi", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 when the file differs"
    )
    args = parser.parse_args(argv)
    rendered = render_schema(build_schema())
    path = SCHEMA_PATH
    shown = path.relative_to(path.parent.parent)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != rendered:
            print(f"{shown} is out of date; run `make openapi` and commit it", file=sys.stderr)
            return 1
        print(f"{shown} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered, encoding="utf-8")
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
