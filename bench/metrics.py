"""The metrics phase: each metrics endpoint timed over the generated data set, and its numbers
checked against the same numbers recounted from the raw tables (no rollups) in the same run.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from bench.config import Mode
from bench.console import log
from bench.database import Monitor
from bench.server import Service
from bench.stats import percentile

METRICS_DAYS = 90
# name -> (route, query parameters besides the range)
METRIC_ENDPOINTS: dict[str, tuple[str, dict[str, str]]] = {
    "summary": ("/v1/programs/{program}/metrics/summary", {}),
    "timeseries": ("/v1/programs/{program}/metrics/timeseries", {"interval": "day"}),
    "channels": ("/v1/programs/{program}/metrics/channels", {"limit": "50"}),
    "referrers": (
        "/v1/programs/{program}/metrics/referrers",
        {"limit": "100", "order_by": "conversions"},
    ),
}

# The same numbers recounted from the raw events, no rollups: $1 program, [$2, $3) the range.
RAW_SCOPE = "program_id = $1 AND occurred_at >= $2 AND occurred_at < $3"
RAW_SQL = {
    "summary": f"""
        WITH k AS (SELECT count(*) AS clicks,
                          count(*) FILTER (WHERE NOT is_bot AND NOT is_duplicate) AS unique_clicks
                   FROM clicks WHERE {RAW_SCOPE}),
             r AS (SELECT count(*) AS referrals,
                          count(*) FILTER (WHERE EXISTS (SELECT 1 FROM conversions c
                              WHERE c.referral_id = referrals.id AND c.status = 'attributed'))
                              AS converted_referrals
                   FROM referrals WHERE {RAW_SCOPE}),
             v AS (SELECT count(*) AS conversions,
                          coalesce(sum(amount - refunded_amount), 0) AS revenue
                   FROM conversions WHERE {RAW_SCOPE} AND status = 'attributed'),
             w AS (SELECT coalesce(sum(w.amount) FILTER (WHERE w.unit = 'USD'), 0) AS reward_cost
                   FROM rewards w JOIN conversions c ON c.id = w.conversion_id
                   WHERE c.program_id = $1 AND c.occurred_at >= $2 AND c.occurred_at < $3
                     AND w.status IN ('pending', 'approved', 'paid'))
        SELECT * FROM k, r, v, w""",
    "timeseries": f"""
        WITH days AS (SELECT generate_series($2::timestamptz, $3::timestamptz - interval '1 day',
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
    "referrers": f"""
        WITH k AS (SELECT referrer_id, count(*) AS clicks FROM clicks WHERE {RAW_SCOPE} GROUP BY 1),
             r AS (SELECT referrer_id, count(*) AS referrals
                   FROM referrals WHERE {RAW_SCOPE} GROUP BY 1),
             v AS (SELECT referrer_id, count(*) AS conversions,
                          sum(amount - refunded_amount) AS revenue
                   FROM conversions WHERE {RAW_SCOPE} AND status = 'attributed' GROUP BY 1)
        SELECT f.id, f.external_id, k.clicks, r.referrals, v.conversions, v.revenue
        FROM k FULL JOIN r USING (referrer_id) FULL JOIN v USING (referrer_id)
             JOIN referrers f ON f.id = referrer_id
        ORDER BY coalesce(v.conversions, 0) DESC, f.external_id, f.id LIMIT 100""",
}


def time_raw_queries(
    monitor: Monitor,
    program_id: str,
    start: datetime,
    end: datetime,
    repeats: int,
    budget_s: float,
    names: list[str],
) -> dict[str, Any]:
    """Each recount `repeats` times, fewer when one takes long; on the monitor's session."""
    timings: dict[str, Any] = {}
    monitor.execute("SET statement_timeout = '180s'")
    try:
        for name in names:
            samples: list[float] = []
            rows: list[Any] = []
            began = time.perf_counter()
            while len(samples) < repeats and (
                not samples or time.perf_counter() - began < budget_s
            ):
                started = time.perf_counter()
                rows = monitor.fetch(RAW_SQL[name], uuid.UUID(program_id), start, end)
                samples.append((time.perf_counter() - started) * 1000)
            timings[name] = {
                "median_ms": round(statistics.median(samples), 1),
                "samples_ms": [round(s, 1) for s in samples],
                "rows": [dict(r) for r in rows],
            }
    finally:
        monitor.execute("RESET statement_timeout")
    return timings


def compare_with_raw(
    name: str, answer: dict[str, Any], raw_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The endpoint's numbers against the raw recount: a fast wrong answer does not count."""

    def dec(value: Any) -> Decimal:
        return Decimal(str(value or 0)).quantize(Decimal("0.01"))

    mismatches = []
    if name == "summary":
        raw = raw_rows[0]
        for key in ("clicks", "unique_clicks", "referrals", "converted_referrals", "conversions"):
            if int(answer.get(key, -1)) != int(raw[key]):
                mismatches.append(f"{key}: endpoint {answer.get(key)} vs raw {raw[key]}")
        for key in ("revenue", "reward_cost"):
            if dec(answer.get(key)) != dec(raw[key]):
                mismatches.append(f"{key}: endpoint {answer.get(key)} vs raw {raw[key]}")
    elif name == "timeseries":
        buckets = answer.get("buckets", [])
        for key in ("clicks", "unique_clicks", "referrals", "conversions"):
            got = sum(int(b.get(key, 0)) for b in buckets)
            want = sum(int(r[key] or 0) for r in raw_rows)
            if got != want:
                mismatches.append(f"sum of {key}: endpoint {got} vs raw {want}")
        if len(buckets) != len(raw_rows):
            mismatches.append(f"buckets: endpoint {len(buckets)} vs raw {len(raw_rows)}")
    elif name == "channels":
        rows = answer.get("data", [])
        by_channel = {
            (r["utm_source"], r["utm_medium"], r["utm_campaign"]): int(r["clicks"]) for r in rows
        }
        raw_by_channel = {(r["s"], r["m"], r["c"]): int(r["clicks"] or 0) for r in raw_rows}
        common = set(by_channel) & set(raw_by_channel)
        if not common or any(by_channel[k] != raw_by_channel[k] for k in common):
            mismatches.append("clicks per channel differ from the raw recount")
    elif name == "referrers":
        rows = answer.get("data", [])
        top = [(r["external_id"], int(r["conversions"])) for r in rows[:10]]
        raw_top = [(r["external_id"], int(r["conversions"] or 0)) for r in raw_rows[:10]]
        if top != raw_top:
            mismatches.append(f"top 10 differ: endpoint {top[:3]}… vs raw {raw_top[:3]}…")
    return {"match": not mismatches, "mismatches": mismatches}


def time_endpoint(
    client: httpx.Client, name: str, url: str, params: dict[str, str], mode: Mode
) -> dict[str, Any]:
    """Sequential requests to one endpoint for the mode's time budget; the first answer is kept
    (under "answer") for the comparison with the raw recount."""
    entry: dict[str, Any] = {"available": True, "path": METRIC_ENDPOINTS[name][0]}
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
            "answer": first.json(),
        }
    )
    log(
        f"  metrics {name}: p50 {entry['p50_ms']} ms, p95 {entry['p95_ms']} ms "
        f"over {len(samples)} sequential requests"
    )
    return entry


def metrics_phase(
    server: Service, admin_key: str, dataset: dict[str, Any], mode: Mode, monitor: Monitor
) -> dict[str, Any]:
    """Every metrics endpoint the service has, over the last METRICS_DAYS of the data set."""
    program = dataset["program_id"]
    end = datetime.fromisoformat(dataset["ends_at"])
    start = end - timedelta(days=METRICS_DAYS)
    window = {"from": start.isoformat(), "to": end.isoformat()}
    result: dict[str, Any] = {"window": window, "days": METRICS_DAYS, "endpoints": {}}
    try:
        paths = set(httpx.get(server.url + "/openapi.json", timeout=30).json().get("paths", {}))
    except Exception as exc:  # the service's schema is how we learn what exists
        paths = set()
        result["note"] = f"could not read /openapi.json: {exc!r}"
    available = [
        n
        for n, (p, _) in METRIC_ENDPOINTS.items()
        if p.replace("{program}", "{program_id}") in paths
    ]
    for name in METRIC_ENDPOINTS:
        if name not in available:
            log(f"  metrics {name}: not available (no such route in the service yet); skipped")
            result["endpoints"][name] = {"available": False}
    if not available:
        return result
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
        for name in available:
            path, query = METRIC_ENDPOINTS[name]
            url, params = path.format(program=program), {**window, **query}
            result["endpoints"][name] = time_endpoint(client, name, url, params, mode)
    log(f"  raw recount of the same numbers ({mode.raw_repeats}x each)")
    raw = time_raw_queries(
        monitor, program, start, end, mode.raw_repeats, mode.metrics_floor_seconds, available
    )
    for name in available:
        entry = result["endpoints"][name]
        entry["raw_median_ms"] = raw[name]["median_ms"]
        entry["raw_samples_ms"] = raw[name]["samples_ms"]
        if entry.get("p50_ms"):
            entry["speedup"] = round(raw[name]["median_ms"] / entry["p50_ms"], 2)
        if "answer" in entry:
            entry["numbers"] = compare_with_raw(name, entry.pop("answer"), raw[name]["rows"])
        log(
            f"  metrics {name}: raw recount {entry['raw_median_ms']} ms, speed-up "
            f"{entry.get('speedup')}x, numbers match: {entry.get('numbers', {}).get('match')}"
        )
    return result
