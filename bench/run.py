"""The benchmark's entry point (make bench, make bench-quick):

    python bench/run.py [--quick] [--workers 1,2] [--replicas 1,2] [--replica-workers 1]
                        [--wait-quiet SECONDS] [--only metrics]

What it measures and how the package is laid out: bench/__init__.py.
"""

import sys
from pathlib import Path

# Run as a script: import the bench package from the repository root, not bench/ itself.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
