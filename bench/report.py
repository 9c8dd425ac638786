"""The report: latest.md (and metrics.md) rendered from the results, beside the JSON.

Markdown is rendered from the results dict alone, so a report can be rebuilt from a saved
latest.json. Every figure of a load run or ceiling is the median of its runs
(bench/medians.py); the runs' own req/s are shown beside it, with the worst load average and
the worst share of the CPU that other processes took during them.
"""

from __future__ import annotations

import json
from typing import Any

from bench.config import CONNECTIONS, RESULTS, WRK_THREADS
from bench.targets import (
    JUDGED_AT_WORKERS,
    LOAD_TARGETS,
    MAX_RSS_MB,
    MEMORY_TARGET,
    metric_label,
)


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else f"{value}{suffix}"


def met_text(met: bool | None) -> str:
    return "—" if met is None else ("**yes**" if met else "**no**")


def ratio(value: float | None, ceiling: float | None) -> str:
    return fmt(value / ceiling, 2) if value is not None and ceiling else "—"


def per_run(row: dict[str, Any]) -> str:
    """The runs' own req/s, "690 / 710 / 702" ("—" for a run that failed or a single run)."""
    runs = row.get("runs") or []
    values = [fmt(r.get("requests_per_s"), 0) if "error" not in r else "failed" for r in runs]
    return " / ".join(values) if values else "—"


def machine_state(row: dict[str, Any]) -> str:
    """The machine during the runs: the worst load average and others' CPU share."""
    noise = row.get("noise") or {}
    if "others_share" not in noise:
        return "—"
    return f"{noise['others_share']:.0%} · {noise['loadavg_1m']:.1f}"


def check_text(row: dict[str, Any]) -> str:
    """The "2xx vs stored" cell: acknowledged / stored, and everything that deserves a look."""
    c = row["check"]
    text = f"{c['acked']:,} / {c['stored']:,}"
    if c["lost"]:
        text += f" **LOST {c['lost']:,}**"
    if c["stored_unanswered"]:
        text += f" (+{c['stored_unanswered']} unanswered)"
    if row["scenario"] == "conversions":
        text += f"; {c['replays_answered_200']:,} retries → 200; rewards {c['rewards']:,}"
        if not c["rewards_ok"]:
            text += " **≠ 2 per conversion**"
    if not c["ok"]:
        text += " **CHECK FAILED**"
    if row["unexpected_statuses"]:
        answers = sorted(row["unexpected_statuses"].items())
        text += " · other answers: " + ", ".join(f"{k}: {v:,}" for k, v in answers)
    if row["socket_errors"]:
        errors = row["socket_errors"].items()
        text += " · socket errors: " + ", ".join(f"{k} {v:,}" for k, v in errors)
    if row.get("replicas_taken_out"):
        text += f" · **a replica taken out {row['replicas_taken_out']}x by the health checks**"
    return text


def render_markdown(results: dict[str, Any]) -> str:
    """latest.md: ceilings and load runs, CPU per request, metrics, the targets, the noise."""
    m = results["machine"]
    pg = results["ceilings"].get("pgbench", {})
    pg_rps = pg.get("requests_per_s")
    bare = results["ceilings"]["bare"]
    target_of = {t["name"]: t for t in results["targets"]}
    git = results["git"]
    uncommitted = f" (+ {len(git['uncommitted'])} uncommitted files)" if git["uncommitted"] else ""
    runs = results.get("runs", 1)
    lines = [
        f"# Benchmark results ({results['mode']} mode)",
        "",
        f"- date: {results['date']} · run time {results['total_seconds'] / 60:.1f} min · "
        f"`{results['command']}` · commit {git['commit']}{uncommitted}",
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['ram_gb']} GB RAM, "
        f"{m['postgres']}, kernel {m['kernel']}, Python {m['python']}; "
        "load generator and Postgres on the same box",
        f"- server: uvicorn {m['packages'].get('uvicorn', '?')} "
        "`--loop uvloop --http httptools --no-access-log`, "
        f"pool {results['server']['pool']}, log level {results['server']['log_level']}; "
        f"wrk {CONNECTIONS} connections, {WRK_THREADS} threads, {results['run_seconds']} s per "
        f"run after {results['warmup_seconds']} s warm-up",
        f"- {runs} runs of every scenario and ceiling: req/s, p50 and p99 are the medians of "
        "the runs (each run's figures in latest.json, `runs`); 2xx vs stored adds the runs up; "
        "others' CPU and load average: the worst run's (the machine is shared)",
        "",
        "| path | workers | req/s | runs' req/s | x bare | x pgbench | p50 | p99 | 2xx vs stored "
        "| max RSS | others' CPU · load avg | target | met? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if pg_rps:
        lines.append(
            f"| pgbench INSERT (click-shaped, {pg['clients']} clients) | — | {fmt(pg_rps)} "
            f"| {per_run(pg)} | — | 1.00 | {fmt(pg['p50_ms'], 2)} ms | {fmt(pg['p99_ms'], 2)} ms "
            f"| {pg['transactions']:,} tx / {pg['stored']:,} rows | — | {machine_state(pg)} "
            "| ceiling | — |"
        )
    elif pg:
        lines.append(
            f"| pgbench INSERT | — | — | — | — | — | — | — | {pg.get('error')} | — | — | — | — |"
        )
    purchase = results["ceilings"].get("pgbench_purchase", {})
    purchase_rps = purchase.get("requests_per_s")
    lines += purchase_ceiling_row(purchase)
    for workers, b in sorted(bare.items()):
        lines.append(
            f"| bare FastAPI GET /ping | {workers} | {fmt(b['requests_per_s'])} | {per_run(b)} "
            f"| 1.00 | {ratio(b['requests_per_s'], pg_rps)} | {fmt(b['p50_ms'], 2)} ms "
            f"| {fmt(b['p99_ms'], 2)} ms | — | {fmt(b['max_rss_mb'], 0)} MB | {machine_state(b)} "
            "| ceiling | — |"
        )
    order = list(LOAD_TARGETS)
    for row in sorted(results["load"], key=lambda r: (order.index(r["scenario"]), r["workers"])):
        ceiling = bare.get(str(row["workers"]), {}).get("requests_per_s")
        target = (
            target_of.get(LOAD_TARGETS[row["scenario"]])
            if row["workers"] == JUDGED_AT_WORKERS
            else None
        )
        # A purchase is compared with the purchase ceiling (the same statements in pgbench).
        db_ceiling = purchase_rps if row["scenario"] == "conversions" and purchase_rps else pg_rps
        lines.append(
            f"| {row['path']} | {row['workers']} | {fmt(row['requests_per_s'])} | {per_run(row)} "
            f"| {ratio(row['requests_per_s'], ceiling)} "
            f"| {ratio(row['requests_per_s'], db_ceiling)} "
            f"| {fmt(row['p50_ms'], 2)} ms | {fmt(row['p99_ms'], 2)} ms | {check_text(row)} "
            f"| {fmt(row['max_rss_mb'], 0)} MB | {machine_state(row)} "
            f"| {target['target'] if target else '(judged at 2 workers)'} "
            f"| {met_text(target['met'] if target else None)} |"
        )
    for failure in results.get("failures", []):
        lines.append(
            f"| {failure['scenario']} | {failure.get('service', failure['workers'])} | FAILED"
            f"{' (run ' + str(failure['run']) + ')' if 'run' in failure else ''}: "
            f"{failure['error'].splitlines()[0][:200]} | | | | | | | | | | **no** |"
        )
    lines += render_cpu(results)
    lines += render_replicas(results)
    lines += render_metrics(results, target_of)
    lines += ["", "| target | value | met? |", "|---|---|---|"]
    for t in results["targets"]:
        missed = [name for name, ok in t["parts"].items() if not ok]
        value = t["value"] + (f" (missed: {', '.join(missed)})" if missed else "")
        lines.append(f"| {t['name']}: {t['target']} | {value} | {met_text(t['met'])} |")
    noisy = [
        (r["scenario"], r.get("service", r["workers"]), r["noise"]["others_share"])
        for r in [*results["load"], *results.get("replicas", [])]
    ]
    noisy += [("bare", f"{w} w", b["noise"]["others_share"]) for w, b in bare.items()]
    if pg.get("noise"):
        noisy.append(("pgbench", "—", pg["noise"]["others_share"]))
    lines += [
        "",
        f"Load average at the start: {results['loadavg_at_start']} on {m['nproc']} cores; "
        f"{sum(results.get('postgres_sessions_at_start', {}).values())} Postgres sessions open "
        f"(max_connections {m['postgres_settings']['max_connections']}).",
    ]
    if noisy:
        name, workers, share = max(noisy, key=lambda n: n[2])
        lines.append(
            f"Noise: processes outside the benchmark used up to {share:.0%} of the machine's CPU "
            f"during a run ({name}, {workers}); per run in latest.json (`noise`, `runs`)."
        )
    mem = target_of.get(MEMORY_TARGET)
    lines += [
        f"Memory: {mem['value'] if mem else '—'} RSS per worker under load "
        f"(target ≤ {MAX_RSS_MB} MB).",
        "",
        "req/s counts only answers that mean stored (201; 302 for the redirect; new conversions "
        "201, retries answered 200 not counted), over the measured run. 2xx vs stored: answers "
        "that mean stored / rows added, warm-up and run together. Rows stored without an answer "
        "(cut off when wrk stopped after the warm-up and after the run, or given up after 10 s) "
        "are allowed up to twice the connection count plus wrk's timeouts; an acknowledged row "
        "that is missing is a loss.",
    ]
    return "\n".join(lines) + "\n"


def purchase_ceiling_row(purchase: dict[str, Any]) -> list[str]:
    """The purchase ceiling's row (bench/purchase_ceiling.py); the conversions rows' x pgbench
    is measured against it."""
    if not purchase:
        return []
    if not purchase.get("requests_per_s"):
        error = purchase.get("error", "no result")
        return [f"| pgbench purchase | — | — | — | — | — | — | — | {error} | — | — | — | — |"]
    return [
        f"| pgbench purchase (the service's statements, {purchase['clients']} clients) | — "
        f"| {fmt(purchase['requests_per_s'])} | {per_run(purchase)} | — | 1.00 "
        f"| {fmt(purchase['p50_ms'], 2)} ms | {fmt(purchase['p99_ms'], 2)} ms "
        f"| {purchase['transactions']:,} tx / {purchase['stored']:,} purchases, "
        f"{purchase.get('rewards', 0):,} rewards | — | {machine_state(purchase)} "
        "| ceiling (conversions) | — |"
    ]


def render_cpu(results: dict[str, Any]) -> list[str]:
    """CPU per request: the figure that holds however busy the machine was."""
    rows = []
    for workers, b in sorted(results["ceilings"]["bare"].items()):
        rows.append(("bare FastAPI GET /ping", workers, b["cpu_ms_per_request"], b["noise"], None))
    order = list(LOAD_TARGETS)
    for row in sorted(results["load"], key=lambda r: (order.index(r["scenario"]), r["workers"])):
        rows.append(
            (
                row["path"],
                row["workers"],
                row["cpu_ms_per_request"],
                row["noise"],
                row.get("db_sessions_opened"),
            )
        )
    lines = [
        "",
        "CPU time per request the server handled (bare: the measured run; scenarios: warm-up, "
        "run and settling, per row stored or answer given), in the service's processes and in "
        "the Postgres backends of the bench database; and the share of the machine's CPU that "
        "other processes took during the measured run:",
        "",
        "| path | workers | server CPU ms / request | Postgres CPU ms / request "
        "| DB connections opened | others' CPU |",
        "|---|---|---|---|---|---|",
    ]
    for path, workers, cpu, noise, opened in rows:
        lines.append(
            f"| {path} | {workers} | {fmt(cpu['server'], 2)} | {fmt(cpu['postgres'], 2)} "
            f"| {fmt(opened)} | {noise['others_share']:.0%} |"
        )
    return lines


SHARE_NAMES = (
    ("service", "service"),
    ("postgres", "Postgres"),
    ("load_generator", "wrk"),
    ("haproxy", "HAProxy"),
    ("others", "others"),
)
# Ours and others' CPU together above this share of the machine: the cores are full.
CPU_FULL = 0.9


def shares_text(row: dict[str, Any]) -> str:
    """The machine's CPU during the runs (medians): "58 · 17 · 12 · 4 · 6 %"."""
    shares = (row.get("noise") or {}).get("shares")
    if not shares:
        return "—"
    return " · ".join(f"{(shares.get(key) or 0):.0%}" for key, _ in SHARE_NAMES)


def by_scenario(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    order = list(LOAD_TARGETS)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (order.index(r["scenario"]), r["replicas"])):
        grouped.setdefault(row["scenario"], []).append(row)
    return grouped


def scaling_finding(rows: list[dict[str, Any]]) -> str:
    """One scenario from its fewest to its most replicas: the gain, where the CPU went at the
    most, and whether the machine's cores were full (no more to gain from replicas here)."""
    first, last = rows[0], rows[-1]
    gain = ratio(last["requests_per_s"], first["requests_per_s"])
    noise = last.get("noise") or {}
    shares = noise.get("shares") or {}
    # Busy: 1 - the kernel's idle share when measured (it sees short-lived processes the
    # per-process shares miss), else the shares' sum.
    idle = noise.get("idle_share")
    total = 1 - idle if idle is not None else sum(value or 0 for value in shares.values())
    spent = ", ".join(f"{label} {(shares.get(key) or 0):.0%}" for key, label in SHARE_NAMES)
    text = (
        f"- {first['path']}: {fmt(first['requests_per_s'], 0)} req/s with {first['replicas']} "
        f"replica(s), {fmt(last['requests_per_s'], 0)} with {last['replicas']} ({gain}x). "
        f"At {last['replicas']}, the machine's CPU went to {spent}"
    )
    if not shares:
        return text + "."
    biggest = max((k for k, _ in SHARE_NAMES), key=lambda k: shares.get(k) or 0)
    if total >= CPU_FULL and biggest == "others":
        return text + (
            f" (the machine {total:.0%} busy): the cores are full, mostly with other processes' "
            "work, so this run cannot tell where the service itself stops scaling."
        )
    if total >= CPU_FULL:
        label = dict(SHARE_NAMES)[biggest]
        return text + (
            f" (the machine {total:.0%} busy): the cores are full, so another replica on this "
            f"machine only adds contention; {label} takes the most."
        )
    return text + (
        f" (the machine {total:.0%} busy): CPU to spare, so the limit is waiting (the database, "
        "locks or the connection count), not the cores."
    )


def render_replicas(results: dict[str, Any]) -> list[str]:
    """The scale-out phase: replicas behind HAProxy, against 1 replica and a direct server."""
    rows = results.get("replicas") or []
    if not rows:
        return []
    per_replica = results.get("replica_workers", 1)
    direct = {(r["scenario"], r["workers"]): r for r in results["load"]}
    lines = [
        "",
        f"Scale out: replicas of {per_replica} worker(s), each its own service process on its "
        "own port, behind a local HAProxy (round robin, keep-alive, health checks on /healthz; "
        "config generated by bench/balancer.py), against the same Postgres; the same wrk load. "
        "CPU: the shares of the machine's CPU (medians of the runs) taken by the service, "
        "Postgres (the bench database's backends), wrk, HAProxy and other processes.",
        "",
        "| path | replicas | req/s | runs' req/s | x fewest replicas | x direct, same workers "
        "| p50 | p99 | 2xx vs stored | CPU: service · Postgres · wrk · HAProxy · others "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    grouped = by_scenario(rows)
    for scenario_rows in grouped.values():
        base = scenario_rows[0]["requests_per_s"]
        for row in scenario_rows:
            same = direct.get((row["scenario"], row["workers"]), {}).get("requests_per_s")
            lines.append(
                f"| {row['path']} | {row['replicas']} x {row.get('workers_per_replica', 1)} w "
                f"| {fmt(row['requests_per_s'])} | {per_run(row)} "
                f"| {ratio(row['requests_per_s'], base)} | {ratio(row['requests_per_s'], same)} "
                f"| {fmt(row['p50_ms'], 2)} ms | {fmt(row['p99_ms'], 2)} ms | {check_text(row)} "
                f"| {shares_text(row)} | {row['noise']['loadavg_1m']:.1f} |"
            )
    lines += ["", "Where it stops scaling:", ""]
    lines += [scaling_finding(scenario_rows) for scenario_rows in grouped.values()]
    return lines


def render_metrics(results: dict[str, Any], target_of: dict[str, Any]) -> list[str]:
    """The metrics table (none when the phase did not run)."""
    metrics = results.get("metrics", {})
    if not metrics.get("endpoints"):
        return []
    d = results["dataset"]
    p = d["params"]
    lines = [
        "",
        f"Metrics over the generated data set '{d['name']}' ({p['clicks']:,} clicks, "
        f"{p['referrers']:,} referrers and codes, {p['referrals']:,} referrals, "
        f"{p['conversions']:,} conversions over {p['days']} days), range: the last "
        f"{metrics['days']} days; sequential requests, 2 workers.",
        "",
        "| endpoint | requests | p50 | p95 | raw recount (median) | speed-up | numbers = raw? "
        "| target | met? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in metrics["endpoints"].items():
        target = target_of.get(metric_label(name), {})
        if not entry.get("available"):
            lines.append(
                f"| {name} | not available | — | — | — | — | — | {target.get('target', '')} | — |"
            )
            continue
        numbers = entry.get("numbers")
        if numbers is None:
            same = "—"
        elif numbers["match"]:
            same = "yes"
        else:
            same = "NO: " + "; ".join(numbers["mismatches"])
        if "error" in entry:
            same += f" · error {entry['error'][:160]}"
        lines.append(
            f"| {name} | {entry.get('requests', 0)} | {fmt(entry.get('p50_ms'), 1)} ms "
            f"| {fmt(entry.get('p95_ms'), 1)} ms | {fmt(entry.get('raw_median_ms'), 1)} ms "
            f"| {fmt(entry.get('speedup'), 2)}x | {same} | {target.get('target', '')} "
            f"| {met_text(target.get('met'))} |"
        )
    return lines


def render_metrics_only(results: dict[str, Any]) -> str:
    """metrics.md, for `--only metrics`."""
    m = results["machine"]
    target_of = {t["name"]: t for t in results["targets"]}
    lines = [
        f"# Metrics benchmark ({results['mode']} mode)",
        "",
        f"- date: {results['date']} · `{results['command']}` · commit {results['git']['commit']}",
        f"- machine: {m['nproc']} cores, {m['postgres']}; load average at the start "
        f"{results['loadavg_at_start']}",
        *render_metrics(results, target_of),
        "",
    ]
    return "\n".join(lines)


def write(name: str, results: dict[str, Any], markdown: str) -> None:
    """bench/results/<name>.json and <name>.md."""
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
