"""Load a metrics data set into one program of the bench database with COPY.

    python bench/generate.py [--quick] [--force] [--dsn postgresql://postgres@127.0.0.1:5432/referral_bench]

`python bench/run.py` does this itself when the data set is missing; the code is in
bench/dataset/.
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path

# Run as a script: import the bench package from the repository root, not bench/ itself.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.dataset import FULL, QUICK, ensure_dataset  # noqa: E402
from bench.dataset.load import DEFAULT_DSN  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--quick", action="store_true", help="the small data set (300k clicks)")
    parser.add_argument("--force", action="store_true", help="reload even when already loaded")
    args = parser.parse_args()
    name, params = ("quick", QUICK) if args.quick else ("full", FULL)
    info = asyncio.run(ensure_dataset(args.dsn, name, params, force=args.force))
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
