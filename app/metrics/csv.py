"""The table-shaped metrics as CSV: one row per JSON row, the same numbers as the JSON."""

from collections.abc import Iterator
from typing import Any

from app.core.csv import CsvTable, json_row
from app.metrics.schemas import (
    Channels,
    Cohorts,
    Funnel,
    Leaderboard,
    Summary,
    Timeseries,
    TrueRewardCost,
)

FUNNEL_COLUMNS = tuple(Funnel.model_fields)
SUMMARY_COLUMNS = (
    "program_id",
    "currency",
    "from",
    "to",
    *FUNNEL_COLUMNS,
    *TrueRewardCost.model_fields,
)
TIMESERIES_COLUMNS = ("label", "start", "end", "partial", *FUNNEL_COLUMNS)
REFERRER_COLUMNS = ("referrer_id", "external_id", "name", *FUNNEL_COLUMNS)
CHANNEL_COLUMNS = ("utm_source", "utm_medium", "utm_campaign", *FUNNEL_COLUMNS)
COHORT_COLUMNS = ("kind", "month", "customers")
PERIOD_COLUMNS = (
    "month_offset",
    "purchases",
    "revenue",
    "cumulative_revenue",
    "cumulative_revenue_per_customer",
)


def summary_csv(summary: Summary) -> CsvTable:
    return CsvTable("summary.csv", SUMMARY_COLUMNS, [json_row(summary, SUMMARY_COLUMNS)])


def timeseries_csv(series: Timeseries) -> CsvTable:
    rows = (json_row(bucket, TIMESERIES_COLUMNS) for bucket in series.buckets)
    return CsvTable(f"timeseries-{series.interval}.csv", TIMESERIES_COLUMNS, rows)


def referrers_csv(board: Leaderboard) -> CsvTable:
    rows = (json_row(row, REFERRER_COLUMNS) for row in board.data)
    return CsvTable("referrers.csv", REFERRER_COLUMNS, rows)


def channels_csv(channels: Channels) -> CsvTable:
    rows = (json_row(row, CHANNEL_COLUMNS) for row in channels.data)
    return CsvTable("channels.csv", CHANNEL_COLUMNS, rows)


def _cohort_rows(cohorts: Cohorts) -> Iterator[list[Any]]:
    for cohort in cohorts.cohorts:
        head = json_row(cohort, COHORT_COLUMNS)
        for period in cohort.periods:
            yield head + json_row(period, PERIOD_COLUMNS)


def cohorts_csv(cohorts: Cohorts) -> CsvTable:
    """One row per cohort and month offset."""
    return CsvTable("cohorts.csv", (*COHORT_COLUMNS, *PERIOD_COLUMNS), _cohort_rows(cohorts))
