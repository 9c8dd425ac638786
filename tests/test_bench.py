"""The benchmark's own logic, without running it: options, verdicts and the report.

The committed results are the fixture: the verdicts recomputed from latest.json and
metrics.json must be the ones stored in them, and a changed measurement must change the
verdict and the report's line.
"""

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.config import FULL, QUICK, parse_args
from bench.targets import evaluate, metric_targets

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def committed(name: str) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return results


def test_options_become_a_frozen_config() -> None:
    config = parse_args([])
    assert (config.mode, config.workers, config.wait_quiet, config.only) == (FULL, (1, 2), 0, None)
    assert config.command == "python bench/run.py"
    quick = parse_args(["--quick", "--workers", "2", "--only", "metrics", "--wait-quiet", "60"])
    assert (quick.mode, quick.workers, quick.wait_quiet) == (QUICK, (2,), 60.0)
    assert quick.command == "python bench/run.py --only metrics --quick"
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.only = None  # type: ignore[misc]
    with pytest.raises(SystemExit):
        parse_args(["--only", "load"])


def test_verdicts_recomputed_from_the_committed_results_are_the_stored_ones() -> None:
    latest, metrics = committed("latest"), committed("metrics")
    assert evaluate(latest) == latest["targets"]
    assert metric_targets(metrics) == metrics["targets"]
    assert report.render_metrics_only(metrics) == (RESULTS / "metrics.md").read_text()


def test_a_click_run_that_meets_its_target_is_reported_met() -> None:
    results = copy.deepcopy(committed("latest"))
    clicks = next(r for r in results["load"] if (r["scenario"], r["workers"]) == ("clicks", 2))
    bare = results["ceilings"]["bare"]["2"]["requests_per_s"]
    clicks["requests_per_s"], clicks["p99_ms"] = round(bare * 0.6, 1), 20.0
    results["targets"] = evaluate(results)

    verdict = next(t for t in results["targets"] if t["name"] == "clicks, 2 workers")
    assert verdict["met"] is True
    assert verdict["value"] == "0.60 x bare; p99 20.0 ms; lost 0"
    line = next(
        line
        for line in report.render_markdown(results).splitlines()
        if line.startswith("| POST /v1/clicks | 2 |")
    )
    assert line.endswith("| **yes** |")


def test_an_acknowledged_row_that_is_missing_fails_the_check_and_the_target() -> None:
    results = copy.deepcopy(committed("latest"))
    row = next(r for r in results["load"] if (r["scenario"], r["workers"]) == ("redirect", 2))
    row["check"].update(lost=3, ok=False)
    results["targets"] = evaluate(results)

    verdict = next(t for t in results["targets"] if t["name"].startswith("redirect"))
    assert verdict["met"] is False
    assert verdict["parts"]["0 lost"] is False
    markdown = report.render_markdown(results)
    assert "**LOST 3** (+128 unanswered) **CHECK FAILED**" in markdown
