"""The run's progress lines on stdout, time-stamped; the results go to files, not here."""

from __future__ import annotations

import time


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
