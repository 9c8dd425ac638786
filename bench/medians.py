"""Several runs of one measurement into one row: the medians, with every run kept beside them.

Each load scenario and each ceiling runs `Mode.runs` times (three by default). The row the
report and the verdicts read carries the median req/s and latencies of those runs; `runs`
holds each run's own figures (and its machine state: load average, others' CPU) for
latest.json. What must hold in every run holds only if it held in each: the stored-vs-answered
check is summed over the runs and fails if any run failed.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

# Figures of a run that become their median in the combined row.
MEDIAN_FIELDS = ("requests_per_s", "requests_per_s_all", "p50_ms", "p95_ms", "p99_ms")
# Per run, kept in `runs`: the medians' inputs, and what the machine was doing meanwhile.
RUN_FIELDS = (*MEDIAN_FIELDS, "max_ms", "duration_s", "requests", "transactions", "stored")


def median(values: list[float | None], digits: int = 2) -> float | None:
    """The median of the values that were measured (None when none was), rounded."""
    measured = [v for v in values if v is not None]
    return round(statistics.median(measured), digits) if measured else None


def run_summary(row: dict[str, Any]) -> dict[str, Any]:
    """One run as `runs` keeps it: its figures, its check, and how busy the machine was."""
    summary = {field: row[field] for field in RUN_FIELDS if field in row}
    noise = row.get("noise", {})
    summary["others_share"] = noise.get("others_share")
    summary["loadavg_1m"] = noise.get("loadavg_1m")
    summary["idle_share"] = noise.get("idle_share")
    if "shares" in noise:
        summary["cpu_shares"] = noise["shares"]
    if "check" in row:
        summary["check_ok"] = row["check"]["ok"]
    return summary


def combined_check(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts summed over the runs, flags true only if true in every run."""
    combined: dict[str, Any] = {}
    for check in checks:
        for key, value in check.items():
            if isinstance(value, bool):
                combined[key] = combined.get(key, True) and value
            elif isinstance(value, int | float):
                combined[key] = combined.get(key, 0) + value
            else:
                combined.setdefault(key, value)
    return combined


def median_noise(noises: list[dict[str, Any]]) -> dict[str, Any]:
    """The machine during the runs: the worst run's others' share and load average (the one
    that could skew a median most), the median of every CPU figure."""
    combined: dict[str, Any] = {
        "others_share": max(n["others_share"] for n in noises),
        "loadavg_1m": max(n["loadavg_1m"] for n in noises),
    }
    combined["ours_share"] = median([n.get("ours_share") for n in noises], 3)
    combined["idle_share"] = median([n.get("idle_share") for n in noises], 3)
    for key in ("server_cpu_s", "postgres_cpu_s", "load_generator_cpu_s"):
        combined[key] = median([n.get(key) for n in noises])
    shares = [n["shares"] for n in noises if "shares" in n]
    if shares:
        combined["shares"] = {key: median([s[key] for s in shares], 3) for key in shares[0]}
    return combined


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one scenario (or ceiling) as one row: the run with the median req/s as the
    base, its figures replaced by the medians, the checks combined, every run under `runs`."""
    if not rows:
        raise ValueError("no runs to combine")
    ordered = sorted(rows, key=lambda r: r.get("requests_per_s") or 0)
    combined = copy.deepcopy(ordered[(len(ordered) - 1) // 2])
    for field in MEDIAN_FIELDS:
        if field in combined:
            combined[field] = median([r.get(field) for r in rows])
    if "check" in combined:
        combined["check"] = combined_check([r["check"] for r in rows])
    for counted in ("statuses", "unexpected_statuses", "socket_errors"):
        if counted in combined:
            totals: dict[str, int] = {}
            for row in rows:
                for key, value in row[counted].items():
                    totals[key] = totals.get(key, 0) + value
            combined[counted] = totals
    if "cpu_ms_per_request" in combined:
        combined["cpu_ms_per_request"] = {
            key: median([r["cpu_ms_per_request"][key] for r in rows])
            for key in combined["cpu_ms_per_request"]
        }
    rss = [r["max_rss_mb"] for r in rows if r.get("max_rss_mb") is not None]
    if "max_rss_mb" in combined:
        combined["max_rss_mb"] = max(rss) if rss else None
    if "noise" in combined:
        combined["noise"] = median_noise([r["noise"] for r in rows])
    combined["runs"] = [run_summary(r) for r in rows]
    return combined


def repeated(runs: int, measure: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """`measure(run)` for run 1..runs, combined; a run that reports an error (pgbench without
    free connections) is kept in `runs` and left out of the medians."""
    results = [measure(run) for run in range(1, runs + 1)]
    good = [r for r in results if "error" not in r]
    if not good:
        return results[-1]
    combined = median_row(good)
    combined["runs"] = [r if "error" in r else run_summary(r) for r in results]
    return combined
