"""The benchmark's own logic, without running it: options, verdicts and the report.

The committed results are the fixture: the verdicts recomputed from latest.json and
metrics.json must be the ones stored in them, and a changed measurement must change the
verdict and the report's line.
"""

import copy
import dataclasses
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import balancer, medians, report, targets
from bench.config import FULL, QUICK, parse_args
from bench.targets import evaluate, metric_targets

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def committed(name: str) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return results


def test_options_become_a_frozen_config() -> None:
    config = parse_args([])
    assert (config.mode, config.workers, config.wait_quiet, config.only) == (FULL, (1, 2), 0, None)
    assert (config.replicas, config.replica_workers) == ((1, 2), 1)
    assert config.command == "python bench/run.py"
    quick = parse_args(["--quick", "--only", "metrics", "--wait-quiet", "60"])
    assert (quick.mode, quick.workers, quick.replicas, quick.wait_quiet) == (
        QUICK,
        (2,),
        (2,),
        60.0,
    )
    assert quick.command == "python bench/run.py --only metrics --quick"
    assert parse_args(["--workers", "2"]).command == "python bench/run.py --workers 2"
    scale = parse_args(["--replicas", "2,3", "--replica-workers", "2"])
    assert (scale.replicas, scale.replica_workers) == ((2, 3), 2)
    assert scale.command == "python bench/run.py --replicas '2,3' --replica-workers 2"
    assert parse_args(["--replicas", ""]).replicas == ()
    for wrong in (["--replicas", "0"], ["--replicas", "two"], ["--workers", ""]):
        with pytest.raises(SystemExit):
            parse_args(wrong)
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
    unanswered = row["check"]["stored_unanswered"]
    cut_off = f" (+{unanswered} unanswered)" if unanswered else ""
    assert f"**LOST 3**{cut_off} **CHECK FAILED**" in markdown


def load_row(rps: float, p99: float, *, lost: int = 0, others: float = 0.1) -> dict[str, Any]:
    """A scenario run as bench/runners.py returns it, reduced to what the medians read."""
    return {
        "scenario": "clicks",
        "path": "POST /v1/clicks",
        "service": "service-2w",
        "workers": 2,
        "requests_per_s": rps,
        "p50_ms": p99 / 4,
        "p95_ms": p99 / 2,
        "p99_ms": p99,
        "statuses": {"201": int(rps * 8)},
        "unexpected_statuses": {},
        "socket_errors": {},
        "check": {
            "acked": int(rps * 8),
            "stored": int(rps * 8) - lost,
            "lost": lost,
            "stored_unanswered": 0,
            "ok": lost == 0,
        },
        "max_rss_mb": 100 + rps / 100,
        "cpu_ms_per_request": {"server": 2000 / rps, "postgres": 0.5},
        "noise": {
            "others_share": others,
            "loadavg_1m": 1 + others * 10,
            "ours_share": 0.8,
            "server_cpu_s": 10.0,
            "postgres_cpu_s": 2.0,
            "shares": {
                "service": 0.6,
                "postgres": 0.1,
                "load_generator": 0.1,
                "haproxy": 0.0,
                "others": others,
            },
        },
    }


def test_the_median_leaves_out_what_was_not_measured() -> None:
    assert medians.median([3.0, 1.0, 2.0]) == 2.0
    assert medians.median([4.0, None, 1.0, 2.0]) == 2.0
    assert medians.median([1.0, 2.0]) == 1.5
    assert medians.median([None]) is None


def test_three_runs_become_their_medians_with_every_run_kept() -> None:
    runs = [
        load_row(900.0, 30.0, others=0.05),
        load_row(700.0, 90.0, others=0.4),
        load_row(800.0, 20.0, others=0.1),
    ]
    row = medians.median_row(runs)

    # req/s and p99 are each their own median: 800 req/s, p99 30 ms (not the 800 run's 20).
    assert (row["requests_per_s"], row["p99_ms"]) == (800.0, 30.0)
    assert [r["requests_per_s"] for r in row["runs"]] == [900.0, 700.0, 800.0]
    assert [r["p99_ms"] for r in row["runs"]] == [30.0, 90.0, 20.0]
    assert [r["others_share"] for r in row["runs"]] == [0.05, 0.4, 0.1]
    # The machine: the worst run's noise; the answers and the check: all runs together.
    assert (row["noise"]["others_share"], row["noise"]["loadavg_1m"]) == (0.4, 5.0)
    assert row["check"] == {
        "acked": 19200,
        "stored": 19200,
        "lost": 0,
        "stored_unanswered": 0,
        "ok": True,
    }
    assert row["statuses"] == {"201": 19200}
    assert row["max_rss_mb"] == 109.0
    assert row["cpu_ms_per_request"]["server"] == 2.5
    assert runs[1]["requests_per_s"] == 700.0  # the inputs are left as they were


def test_one_run_that_lost_a_row_fails_the_combined_check_and_the_target() -> None:
    row = medians.median_row(
        [load_row(900.0, 20.0), load_row(950.0, 20.0, lost=2), load_row(920.0, 20.0)]
    )
    assert (row["check"]["lost"], row["check"]["ok"]) == (2, False)
    assert [r["check_ok"] for r in row["runs"]] == [True, False, True]
    verdict = targets.hot_path("clicks, 2 workers", row, {"2": {"requests_per_s": 1000.0}})
    assert verdict["parts"] == {"≥ 0.5 x bare": True, "p99 ≤ 25 ms": True, "0 lost": False}


def test_a_ceiling_run_that_failed_stays_in_the_runs_but_not_in_the_medians() -> None:
    outcomes: Iterator[dict[str, Any]] = iter(
        [
            {"requests_per_s": 10.0, "p99_ms": 5.0},
            {"error": "only 12 free Postgres connections; pgbench skipped"},
            {"requests_per_s": 30.0, "p99_ms": 7.0},
        ]
    )
    ceiling = medians.repeated(3, lambda run: next(outcomes))
    assert (ceiling["requests_per_s"], ceiling["p99_ms"]) == (20.0, 6.0)
    assert ceiling["runs"][1] == {"error": "only 12 free Postgres connections; pgbench skipped"}
    assert [r.get("requests_per_s") for r in ceiling["runs"]] == [10.0, None, 30.0]
    failed = medians.repeated(2, lambda run: {"error": "no connections"})
    assert failed == {"error": "no connections"}


def test_the_report_shows_the_medians_the_runs_and_the_machine_state() -> None:
    results = copy.deepcopy(committed("latest"))
    runs = [load_row(900.0, 30.0), load_row(700.0, 90.0, others=0.45), load_row(800.0, 20.0)]
    results["load"] = [r for r in results["load"] if r["scenario"] != "clicks"]
    results["load"].append(medians.median_row(runs))
    results["targets"] = evaluate(results)
    line = next(
        line
        for line in report.render_markdown(results).splitlines()
        if line.startswith("| POST /v1/clicks | 2 |")
    )
    assert line.startswith("| POST /v1/clicks | 2 | 800.0 | 900 / 700 / 800 |")
    assert "| 30.00 ms |" in line
    assert "| 45% · 5.5 |" in line  # the worst run's others' CPU and load average


def replica_rows() -> list[dict[str, Any]]:
    one, two = load_row(500.0, 60.0), load_row(800.0, 40.0)
    for row, replicas in ((one, 1), (two, 2)):
        row.update(
            replicas=replicas,
            workers_per_replica=1,
            workers=replicas,
            service=f"replicas-{replicas}x1w",
        )
        row["runs"] = [medians.run_summary(row)]
    two["noise"]["shares"] = {
        "service": 0.62,
        "postgres": 0.14,
        "load_generator": 0.11,
        "haproxy": 0.05,
        "others": 0.06,
    }
    return [two, one]


def test_the_scale_out_table_compares_replicas_and_says_where_scaling_stops() -> None:
    results = copy.deepcopy(committed("latest"))
    results["replicas"] = replica_rows()
    results["replica_workers"] = 1
    direct = next(r for r in results["load"] if (r["scenario"], r["workers"]) == ("clicks", 2))
    direct["requests_per_s"] = 1000.0
    results["targets"] = evaluate(results)
    lines = report.render_markdown(results).splitlines()

    rows = [line for line in lines if line.startswith("| POST /v1/clicks | ")]
    assert rows[-2].startswith("| POST /v1/clicks | 1 x 1 w | 500.0 | 500 | 1.00 | ")
    assert rows[-1].startswith("| POST /v1/clicks | 2 x 1 w | 800.0 | 800 | 1.60 | 0.80 | ")
    assert "| 62% · 14% · 11% · 5% · 6% |" in rows[-1]
    finding = next(line for line in lines if line.startswith("- POST /v1/clicks: "))
    assert finding.startswith("- POST /v1/clicks: 500 req/s with 1 replica(s), 800 with 2 (1.60x)")
    assert (
        "service 62%, Postgres 14%, wrk 11%, HAProxy 5%, others 6% (the machine 98% busy)"
        in finding
    )
    assert "the cores are full" in finding and "service takes the most" in finding

    results["replicas"][0]["noise"]["shares"] = {
        "service": 0.3,
        "postgres": 0.1,
        "load_generator": 0.05,
        "haproxy": 0.02,
        "others": 0.03,
    }
    finding = next(
        line
        for line in report.render_markdown(results).splitlines()
        if line.startswith("- POST /v1/clicks: ")
    )
    assert "(the machine 50% busy): CPU to spare" in finding


def test_the_haproxy_config_balances_the_replicas_with_health_checks(tmp_path: Path) -> None:
    text = balancer.haproxy_config(
        18080, [("127.0.0.1", 18001), ("127.0.0.1", 18002)], tmp_path / "stats.sock"
    )
    lines = [line.strip() for line in text.splitlines()]
    assert "bind 127.0.0.1:18080" in lines
    assert "balance roundrobin" in lines
    assert "option httpchk" in lines
    assert "http-check send meth GET uri /healthz" in lines
    assert "http-check expect status 200" in lines
    assert [line for line in lines if line.startswith("server ")] == [
        "server replica1 127.0.0.1:18001 check",
        "server replica2 127.0.0.1:18002 check",
    ]
    assert f"stats socket {tmp_path / 'stats.sock'} mode 600 level user" in lines
    # The visitor's own X-Forwarded-For goes through; no second header from the balancer.
    assert "forwardfor" not in text
    assert not [line for line in lines if line.startswith("bind") and "127.0.0.1:" not in line]
    with pytest.raises(ValueError):
        balancer.haproxy_config(18080, [], tmp_path / "stats.sock")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        balancer.haproxy_config(18080, [("127.0.0.1", 18001)], tmp_path / "stats.sock")
    )
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_replicas_states_are_read_from_haproxys_stat_csv() -> None:
    csv = (
        "# pxname,svname,qcur,status,weight,chkdown,downtime\n"
        "bench,FRONTEND,,OPEN,,,\n"
        "replicas,replica1,0,UP,1,0,0\n"
        "replicas,replica2,0,DOWN,1,2,7\n"
        "replicas,BACKEND,0,UP,1,0,0\n"
    )
    assert balancer.parse_stat(csv) == {
        "replica1": {"status": "UP", "chkdown": 0, "downtime": 0},
        "replica2": {"status": "DOWN", "chkdown": 2, "downtime": 7},
    }
    assert balancer.parse_stat("") == {}


def test_a_replica_taken_out_by_the_health_checks_is_flagged_in_the_report() -> None:
    row = replica_rows()[0]
    assert "taken out" not in report.check_text(row)
    row["replicas_taken_out"] = 2
    assert report.check_text(row).endswith(" · **a replica taken out 2x by the health checks**")


def test_cores_filled_by_other_processes_tell_nothing_about_scaling() -> None:
    rows = sorted(replica_rows(), key=lambda r: r["replicas"])
    rows[-1]["noise"]["shares"] = {
        "service": 0.2,
        "postgres": 0.05,
        "load_generator": 0.05,
        "haproxy": 0.01,
        "others": 0.7,
    }
    finding = report.scaling_finding(rows)
    assert "(the machine 101% busy): the cores are full, mostly with other processes'" in finding
    # The kernel's idle count, when there is one, decides: here the shares missed 10 %.
    rows[-1]["noise"]["shares"]["others"] = 0.6
    rows[-1]["noise"]["idle_share"] = 0.0
    finding = report.scaling_finding(rows)
    assert "others 60% (the machine 100% busy): the cores are full" in finding


def test_a_run_without_answers_has_no_latency_and_misses_its_target() -> None:
    silent = load_row(100.0, 10.0)
    silent.update(requests_per_s=0.0, p50_ms=None, p95_ms=None, p99_ms=None)
    row = medians.median_row([silent])
    assert row["p99_ms"] is None
    verdict = targets.hot_path("clicks, 2 workers", row, {"2": {"requests_per_s": 1000.0}})
    assert verdict["parts"]["p99 ≤ 25 ms"] is False
    assert medians.median([None, None]) is None
