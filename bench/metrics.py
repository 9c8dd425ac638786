"""The metrics phase: each metrics endpoint timed over the generated data set, and its numbers
checked against the same numbers recounted from the raw tables (no rollups) in the same run.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from bench.config import Mode
from bench.console import log
from bench.database import Monitor
from bench.server import Service
from bench.stats import percentile
from bench.targets import METRIC_TARGET_MS

METRICS_DAYS = 90
# A range not aligned to UTC days (nor hours, nor quarter hours): 13:37 to 13:37, 90 days later.
EDGE_TIME = timedelta(hours=13, minutes=37)
LEADERBOARD_ORDERS = ("conversions", "revenue", "referrals", "clicks")
ROUTES = {
    "summary": "/v1/programs/{program}/metrics/summary",
    "timeseries": "/v1/programs/{program}/metrics/timeseries",
    "channels": "/v1/programs/{program}/metrics/channels",
    "referrers": "/v1/programs/{program}/metrics/referrers",
    "cohorts": "/v1/programs/{program}/metrics/cohorts",
    "referrer": "/v1/referrers/{referrer}/metrics",
}


@dataclass(frozen=True)
class Case:
    """One timed request: an endpoint, its parameters besides the range, and which range."""

    endpoint: str
    params: dict[str, str]
    edges: bool  # the range 13:37 to 13:37 instead of whole UTC days
    # ≥ METRIC_SPEEDUP x the raw recount: for the program-wide numbers the rollups serve, not
    # for one referrer's (an index finds their rows) or cohorts (counted raw either way).
    speedup_target: bool = True


def metric_cases() -> dict[str, Case]:
    """name -> case: every endpoint, every leaderboard order, each over both ranges. The names
    of the day-aligned summary, timeseries, channels and referrers (by conversions) are kept."""
    cases: dict[str, Case] = {}
    for edges in (False, True):
        suffix = " 13:37" if edges else ""
        cases["summary" + suffix] = Case("summary", {}, edges)
        cases["timeseries" + suffix] = Case("timeseries", {"interval": "day"}, edges)
        cases["channels" + suffix] = Case("channels", {"limit": "50"}, edges)
        for order in LEADERBOARD_ORDERS:
            name = "referrers" + ("" if order == "conversions" else f" by {order}") + suffix
            cases[name] = Case("referrers", {"limit": "100", "order_by": order}, edges)
        cases["cohorts" + suffix] = Case("cohorts", {}, edges, speedup_target=False)
        cases["referrer" + suffix] = Case("referrer", {}, edges, speedup_target=False)
    return cases


# The same numbers recounted from the raw events, no rollups: $1 program, [$2, $3) the range
# ($4 the referrer, for one referrer's numbers).
RAW_SCOPE = "program_id = $1 AND occurred_at >= $2 AND occurred_at < $3"


def _summary_sql(scope: str = RAW_SCOPE, reward_scope: str = "c.program_id = $1") -> str:
    return f"""
        WITH k AS (SELECT count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {scope}),
             r AS (SELECT count(*) AS referrals,
                          count(*) FILTER (WHERE EXISTS (SELECT 1 FROM conversions c
                              WHERE c.referral_id = referrals.id AND c.status = 'attributed'))
                              AS converted_referrals
                   FROM referrals WHERE {scope}),
             v AS (SELECT count(*) AS conversions,
                          coalesce(sum(amount - refunded_amount), 0) AS revenue
                   FROM conversions WHERE {scope} AND status = 'attributed'),
             w AS (SELECT coalesce(sum(w.amount) FILTER (WHERE w.unit = 'USD'), 0) AS reward_cost
                   FROM rewards w JOIN conversions c ON c.id = w.conversion_id
                   WHERE {reward_scope} AND c.occurred_at >= $2 AND c.occurred_at < $3
                     AND w.status IN ('pending', 'approved', 'paid'))
        SELECT * FROM k, r, v, w"""


def _referrers_sql(order_by: str) -> str:
    return f"""
        WITH k AS (SELECT referrer_id, count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {RAW_SCOPE} GROUP BY 1),
             r AS (SELECT referrer_id, count(*) AS referrals
                   FROM referrals WHERE {RAW_SCOPE} GROUP BY 1),
             v AS (SELECT referrer_id, count(*) AS conversions,
                          sum(amount - refunded_amount) AS revenue
                   FROM conversions WHERE {RAW_SCOPE} AND status = 'attributed' GROUP BY 1)
        SELECT f.id, f.external_id, coalesce(k.clicks, 0) AS clicks,
               coalesce(k.unique_clicks, 0) AS unique_clicks,
               coalesce(r.referrals, 0) AS referrals, coalesce(v.conversions, 0) AS conversions,
               coalesce(v.revenue, 0) AS revenue
        FROM k FULL JOIN r USING (referrer_id) FULL JOIN v USING (referrer_id)
             JOIN referrers f ON f.id = referrer_id
        ORDER BY {order_by} DESC, f.external_id, f.id LIMIT 100"""


RAW_SQL = {
    "summary": _summary_sql(),
    "referrer": _summary_sql(
        RAW_SCOPE + " AND referrer_id = $4", "c.program_id = $1 AND c.referrer_id = $4"
    ),
    "timeseries": f"""
        WITH days AS (SELECT generate_series(date_trunc('day', $2::timestamptz),
                                             $3::timestamptz - interval '1 microsecond',
                                             interval '1 day') AS day),
             k AS (SELECT date_trunc('day', occurred_at) AS day, count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {RAW_SCOPE} GROUP BY 1),
             r AS (SELECT date_trunc('day', occurred_at) AS day, count(*) AS referrals
                   FROM referrals WHERE {RAW_SCOPE} GROUP BY 1),
             v AS (SELECT date_trunc('day', occurred_at) AS day, count(*) AS conversions,
                          sum(amount - refunded_amount) AS revenue
                   FROM conversions WHERE {RAW_SCOPE} AND status = 'attributed' GROUP BY 1),
             w AS (SELECT date_trunc('day', c.occurred_at) AS day, sum(w.amount) AS reward_cost
                   FROM rewards w JOIN conversions c ON c.id = w.conversion_id
                   WHERE c.program_id = $1 AND c.occurred_at >= $2 AND c.occurred_at < $3
                     AND w.status IN ('pending', 'approved', 'paid') GROUP BY 1)
        SELECT days.day, k.clicks, k.unique_clicks, r.referrals, v.conversions, v.revenue,
               w.reward_cost
        FROM days LEFT JOIN k USING (day) LEFT JOIN r USING (day) LEFT JOIN v USING (day)
             LEFT JOIN w USING (day) ORDER BY days.day""",
    "channels": f"""
        WITH k AS (SELECT coalesce(nullif(utm_source, ''), 'direct') AS s,
                          coalesce(nullif(utm_medium, ''), 'direct') AS m,
                          coalesce(nullif(utm_campaign, ''), 'direct') AS c,
                          count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {RAW_SCOPE} GROUP BY 1, 2, 3),
             v AS (SELECT coalesce(nullif(k.utm_source, ''), 'direct') AS s,
                          coalesce(nullif(k.utm_medium, ''), 'direct') AS m,
                          coalesce(nullif(k.utm_campaign, ''), 'direct') AS c,
                          count(*) AS conversions, sum(v.amount - v.refunded_amount) AS revenue
                   FROM conversions v LEFT JOIN clicks k ON k.id = v.click_id
                   WHERE v.program_id = $1 AND v.occurred_at >= $2 AND v.occurred_at < $3
                     AND v.status = 'attributed' GROUP BY 1, 2, 3)
        SELECT * FROM k FULL JOIN v USING (s, m, c)
        ORDER BY coalesce(k.clicks, 0) DESC, coalesce(v.conversions, 0) DESC, s, m, c LIMIT 50""",
    **{f"referrers {order}": _referrers_sql(order) for order in LEADERBOARD_ORDERS},
    # Cohorts in UTC: referred customers per month of referral, their purchases from the
    # referral on and before the end; unattributed customers per month of first purchase.
    "cohorts": f"""
        WITH referred AS (
                 SELECT to_char(date_trunc('month', occurred_at, 'UTC'), 'YYYY-MM') AS month,
                        count(*) AS customers
                 FROM referrals WHERE {RAW_SCOPE} GROUP BY 1),
             bought AS (
                 SELECT count(*) AS purchases, sum(c.amount - c.refunded_amount) AS revenue
                 FROM referrals r JOIN conversions c
                   ON c.program_id = r.program_id AND c.customer_id = r.customer_id
                  AND c.occurred_at >= r.occurred_at AND c.occurred_at < $3
                 WHERE r.program_id = $1 AND r.occurred_at >= $2 AND r.occurred_at < $3),
             organic AS (
                 SELECT to_char(date_trunc('month', first_at, 'UTC'), 'YYYY-MM') AS month,
                        count(*) AS customers
                 FROM (SELECT customer_id, min(occurred_at) AS first_at FROM conversions c
                       WHERE c.program_id = $1 AND NOT EXISTS (
                           SELECT 1 FROM referrals r
                           WHERE r.program_id = $1 AND r.customer_id = c.customer_id)
                       GROUP BY 1) f
                 WHERE first_at >= $2 AND first_at < $3 GROUP BY 1)
        SELECT 'referred' AS kind, month, customers, NULL::bigint AS purchases,
               NULL::numeric AS revenue FROM referred
        UNION ALL SELECT 'unattributed', month, customers, NULL, NULL FROM organic
        UNION ALL SELECT 'bought', NULL, NULL, purchases, revenue FROM bought""",
}


def raw_name(case: Case) -> str:
    if case.endpoint == "referrers":
        return f"referrers {case.params['order_by']}"
    return case.endpoint


def time_raw_queries(
    monitor: Monitor,
    program_id: str,
    ranges: dict[bool, tuple[datetime, datetime]],
    referrer_id: str | None,
    repeats: int,
    budget_s: float,
    wanted: list[tuple[str, bool]],
) -> dict[tuple[str, bool], Any]:
    """Each recount (name, edges) `repeats` times, fewer when one takes long; on the monitor's
    session."""
    timings: dict[tuple[str, bool], Any] = {}
    monitor.execute("SET statement_timeout = '180s'")
    try:
        for name, edges in wanted:
            start, end = ranges[edges]
            args: list[Any] = [uuid.UUID(program_id), start, end]
            if name == "referrer":
                args.append(uuid.UUID(str(referrer_id)))
            samples: list[float] = []
            rows: list[Any] = []
            began = time.perf_counter()
            while len(samples) < repeats and (
                not samples or time.perf_counter() - began < budget_s
            ):
                started = time.perf_counter()
                rows = monitor.fetch(RAW_SQL[name], *args)
                samples.append((time.perf_counter() - started) * 1000)
            timings[(name, edges)] = {
                "median_ms": round(statistics.median(samples), 1),
                "samples_ms": [round(s, 1) for s in samples],
                "rows": [dict(r) for r in rows],
            }
    finally:
        monitor.execute("RESET statement_timeout")
    return timings


def dec(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


COUNTS = ("clicks", "unique_clicks", "referrals", "converted_referrals", "conversions")
LEADERBOARD_COLUMNS = ("clicks", "unique_clicks", "referrals", "conversions")


def compare_with_raw(
    case: Case, answer: dict[str, Any], raw_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The endpoint's numbers against the raw recount: a fast wrong answer does not count."""
    mismatches = []
    name = case.endpoint
    if name in ("summary", "referrer"):
        raw = raw_rows[0]
        got = answer["funnel"] if name == "referrer" else answer
        for key in COUNTS:
            if int(got.get(key, -1)) != int(raw[key]):
                mismatches.append(f"{key}: endpoint {got.get(key)} vs raw {raw[key]}")
        for key in ("revenue", "reward_cost"):
            if dec(got.get(key)) != dec(raw[key]):
                mismatches.append(f"{key}: endpoint {got.get(key)} vs raw {raw[key]}")
    elif name == "timeseries":
        buckets = answer.get("buckets", [])
        for key in ("clicks", "unique_clicks", "referrals", "conversions"):
            got_by_day = [int(b.get(key, 0)) for b in buckets]
            want_by_day = [int(r[key] or 0) for r in raw_rows]
            if got_by_day != want_by_day:
                mismatches.append(
                    f"{key} per day differ (sums {sum(got_by_day)} vs raw {sum(want_by_day)})"
                )
        if len(buckets) != len(raw_rows):
            mismatches.append(f"buckets: endpoint {len(buckets)} vs raw {len(raw_rows)}")
    elif name == "channels":
        rows = answer.get("data", [])
        got_rows = [
            (
                r["utm_source"],
                r["utm_medium"],
                r["utm_campaign"],
                int(r["clicks"]),
                int(r["unique_clicks"]),
                int(r["conversions"]),
                dec(r["revenue"]),
            )
            for r in rows
        ]
        want_rows = [
            (
                r["s"],
                r["m"],
                r["c"],
                int(r["clicks"] or 0),
                int(r["unique_clicks"] or 0),
                int(r["conversions"] or 0),
                dec(r["revenue"]),
            )
            for r in raw_rows
        ]
        if got_rows != want_rows:
            mismatches.append(f"channels differ: endpoint {got_rows[:2]}… vs raw {want_rows[:2]}…")
    elif name == "referrers":
        rows = answer.get("data", [])
        got_rows = [
            (r["external_id"], *(int(r[k]) for k in LEADERBOARD_COLUMNS), dec(r["revenue"]))
            for r in rows
        ]
        want_rows = [
            (r["external_id"], *(int(r[k]) for k in LEADERBOARD_COLUMNS), dec(r["revenue"]))
            for r in raw_rows
        ]
        if got_rows != want_rows:
            first = next(
                (i for i, (a, b) in enumerate(zip(got_rows, want_rows, strict=False)) if a != b),
                min(len(got_rows), len(want_rows)),
            )
            mismatches.append(
                f"top 100 differ from row {first}: endpoint {got_rows[first : first + 1]} vs raw "
                f"{want_rows[first : first + 1]} ({len(got_rows)} vs {len(want_rows)} rows)"
            )
    elif name == "cohorts":
        cohorts = answer.get("cohorts", [])
        for kind in ("referred", "unattributed"):
            got_members = {c["month"]: c["customers"] for c in cohorts if c["kind"] == kind}
            want_members = {r["month"]: int(r["customers"]) for r in raw_rows if r["kind"] == kind}
            if {m: n for m, n in got_members.items() if n} != want_members:
                mismatches.append(f"{kind} customers: {got_members} vs raw {want_members}")
        bought = next(r for r in raw_rows if r["kind"] == "bought")
        referred = [p for c in cohorts if c["kind"] == "referred" for p in c["periods"]]
        purchases = sum(int(p["purchases"]) for p in referred)
        revenue = sum((dec(p["revenue"]) for p in referred), Decimal(0))
        if (purchases, revenue) != (int(bought["purchases"] or 0), dec(bought["revenue"])):
            mismatches.append(
                f"referred purchases: {purchases}, {revenue} vs raw {bought['purchases']}, "
                f"{bought['revenue']}"
            )
    return {"match": not mismatches, "mismatches": mismatches}


def time_endpoint(
    client: httpx.Client, name: str, path: str, url: str, params: dict[str, str], mode: Mode
) -> dict[str, Any]:
    """Sequential requests to one endpoint for the mode's time budget; the first answer is kept
    (under "answer") for the comparison with the raw recount. The load average is recorded."""
    entry: dict[str, Any] = {"available": True, "path": path, "params": params}
    started = time.perf_counter()
    first = client.get(url, params=params)
    entry["first_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if first.status_code != 200:
        entry["error"] = f"{first.status_code}: {first.text[:300]}"
        log(f"  metrics {name}: HTTP {first.status_code}; skipped")
        return entry
    # The first answer warms caches; a slow one (> 1 s) counts, caches hardly matter then.
    samples: list[float] = [entry["first_ms"]] if entry["first_ms"] > 1000 else []
    began = time.monotonic()

    def more() -> bool:
        """Within the time budget; or fewer than 3 samples and the next still before the floor."""
        elapsed = time.monotonic() - began
        if elapsed < mode.metrics_seconds:
            return True
        last_s = (samples[-1] if samples else entry["first_ms"]) / 1000
        return len(samples) < 3 and elapsed + last_s < mode.metrics_floor_seconds

    load_before = os.getloadavg()[0]
    while len(samples) < mode.metrics_requests and more():
        started = time.perf_counter()
        answer = client.get(url, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            entry["error"] = f"{answer.status_code}: {answer.text[:300]}"
            break
    ordered = sorted(samples)
    entry.update(
        {
            "requests": len(samples),
            "p50_ms": percentile(ordered, 50),
            "p95_ms": percentile(ordered, 95),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "answer": first.json(),
        }
    )
    log(
        f"  metrics {name}: p50 {entry['p50_ms']} ms, p95 {entry['p95_ms']} ms "
        f"over {len(samples)} sequential requests (load average {entry['loadavg'][1]})"
    )
    return entry


def metrics_phase(
    server: Service, admin_key: str, dataset: dict[str, Any], mode: Mode, monitor: Monitor
) -> dict[str, Any]:
    """Every metrics endpoint the service has, every leaderboard order, over the last
    METRICS_DAYS of the data set and over a range of as many days not aligned to UTC days."""
    program = dataset["program_id"]
    end = datetime.fromisoformat(dataset["ends_at"])
    ranges = {
        False: (end - timedelta(days=METRICS_DAYS), end),
        True: (
            end - timedelta(days=METRICS_DAYS + 1) + EDGE_TIME,
            end - timedelta(days=1) + EDGE_TIME,
        ),
    }
    windows = {
        edges: {"from": lo.isoformat(), "to": hi.isoformat()} for edges, (lo, hi) in ranges.items()
    }
    result: dict[str, Any] = {
        "window": windows[False],
        "edge_window": windows[True],
        "days": METRICS_DAYS,
        "endpoints": {},
    }
    # One referrer's metrics: the referrer with most clicks in a month (the most rows to count).
    referrer = monitor.fetch(
        "SELECT referrer_id FROM metrics_referrer_rollups WHERE program_id = $1 "
        "AND grain = 'month' AND unit = '' ORDER BY clicks DESC LIMIT 1",
        uuid.UUID(program),
    )
    referrer_id = str(referrer[0]["referrer_id"]) if referrer else None
    result["referrer_id"] = referrer_id
    try:
        paths = set(httpx.get(server.url + "/openapi.json", timeout=30).json().get("paths", {}))
    except Exception as exc:  # the service's schema is how we learn what exists
        paths = set()
        result["note"] = f"could not read /openapi.json: {exc!r}"

    def exists(endpoint: str) -> bool:
        route = ROUTES[endpoint].replace("{program}", "{program_id}")
        route = route.replace("{referrer}", "{referrer_id}")
        return route in paths and (endpoint != "referrer" or referrer_id is not None)

    cases = metric_cases()
    available = [name for name, case in cases.items() if exists(case.endpoint)]
    for name in cases:
        if name not in available:
            log(f"  metrics {name}: not available (no such route in the service yet); skipped")
            result["endpoints"][name] = {"available": False, "target_ms": METRIC_TARGET_MS}
    if not available:
        return result
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        for name in available:
            case = cases[name]
            path = ROUTES[case.endpoint]
            url = path.format(program=program, referrer=referrer_id)
            params = {**windows[case.edges], **case.params}
            entry = time_endpoint(client, name, path, url, params, mode)
            entry["speedup_target"] = case.speedup_target
            entry["target_ms"] = METRIC_TARGET_MS
            result["endpoints"][name] = entry
    log(f"  raw recount of the same numbers ({mode.raw_repeats}x each)")
    wanted = sorted({(raw_name(cases[name]), cases[name].edges) for name in available})
    raw = time_raw_queries(
        monitor,
        program,
        ranges,
        referrer_id,
        mode.raw_repeats,
        mode.metrics_floor_seconds,
        wanted,
    )
    for name in available:
        case = cases[name]
        entry = result["endpoints"][name]
        recount = raw[(raw_name(case), case.edges)]
        entry["raw_median_ms"] = recount["median_ms"]
        entry["raw_samples_ms"] = recount["samples_ms"]
        if entry.get("p50_ms"):
            entry["speedup"] = round(recount["median_ms"] / entry["p50_ms"], 2)
        if "answer" in entry:
            entry["numbers"] = compare_with_raw(case, entry.pop("answer"), recount["rows"])
        log(
            f"  metrics {name}: raw recount {entry['raw_median_ms']} ms, speed-up "
            f"{entry.get('speedup')}x, numbers match: {entry.get('numbers', {}).get('match')}"
        )
    return result
