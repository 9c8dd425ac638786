"""Rollup tables: the metrics' measures pre-summed per time unit, kept by database triggers.

Each table holds signed delta rows, appended by triggers on clicks, referrals, conversions and
rewards in the transaction that writes the event (migration 0006), so no write path can skip
them. There is no unique key, so concurrent writers never wait on each other's rollup rows; a
reader sums every row of a key. Compaction (app.metrics.rollups) replaces the rows of a key by
one row holding their sum, in one statement, so a reader sees either the rows or their sum.

Keys: the program, a grain and the UTC start of its unit ("quarter": 15 minutes and "day" for
the program and channel tables; "day" and "month", a calendar month in UTC, for referrers), a
dimension (nothing, the utm channel, or the referrer) and `unit`: "" for the event counts, or
the unit of reward amounts (a currency code, or "points"). Events count at the same instant as
in app.metrics.service: a referral's conversion state at the referral's occurred_at, rewards at
their conversion's occurred_at, referrer and channel.
"""

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Uuid,
    text,
)

from app.core.db import Base, UTCDateTime

MONEY = Numeric(20, 4)
COUNTS = ("clicks", "unique_clicks", "referrals", "converted_referrals", "conversions")
AMOUNTS = ("revenue", "reward_amount")
HEAD_MEASURES = ("clicks", "referrals", "conversions", "revenue")


def heads_predicate(measure: str) -> str:
    """The rows of the heads indexes: monthly, event counts, compacted, `measure` positive."""
    return f"grain = 'month' AND unit = '' AND compacted AND {measure} > 0"


def _measures() -> list[Column[Any]]:
    return [
        *(Column(name, Integer, nullable=False) for name in COUNTS),
        *(Column(name, MONEY, nullable=False) for name in AMOUNTS),
        # False for a delta row written by a trigger; compaction finds its keys through it.
        Column("compacted", Boolean, nullable=False),
    ]


def _key() -> list[Column[Any]]:
    return [
        Column("program_id", Uuid, nullable=False),
        Column("grain", String(8), nullable=False),
        Column("bucket_start", UTCDateTime, nullable=False),
        Column("unit", String(8), nullable=False),
    ]


program_rollups = Table(
    "metrics_program_rollups",
    Base.metadata,
    *_key(),
    *_measures(),
    Index("ix_metrics_program_rollups_program_id_grain", "program_id", "grain", "bucket_start"),
    Index(
        "ix_metrics_program_rollups_uncompacted",
        "program_id",
        "grain",
        "bucket_start",
        "unit",
        postgresql_where=text("NOT compacted"),
        sqlite_where=text("NOT compacted"),
    ),
)

channel_rollups = Table(
    "metrics_channel_rollups",
    Base.metadata,
    *_key(),
    # "direct" when the click had none (or there was no click), as the endpoint shows it.
    Column("utm_source", String(200), nullable=False),
    Column("utm_medium", String(200), nullable=False),
    Column("utm_campaign", String(200), nullable=False),
    *_measures(),
    Index("ix_metrics_channel_rollups_program_id_grain", "program_id", "grain", "bucket_start"),
    Index(
        "ix_metrics_channel_rollups_uncompacted",
        "program_id",
        "grain",
        "bucket_start",
        "unit",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        postgresql_where=text("NOT compacted"),
        sqlite_where=text("NOT compacted"),
    ),
)

referrer_rollups = Table(
    "metrics_referrer_rollups",
    Base.metadata,
    *_key(),
    Column("referrer_id", Uuid, nullable=False),
    *_measures(),
    Index("ix_metrics_referrer_rollups_program_id_grain", "program_id", "grain", "bucket_start"),
    Index("ix_metrics_referrer_rollups_referrer_id_grain", "referrer_id", "grain", "bucket_start"),
    # The leaderboard ranks by a sparse measure through these, without reading click rows.
    Index(
        "ix_metrics_referrer_rollups_conversions",
        "program_id",
        "grain",
        "bucket_start",
        postgresql_include=["referrer_id", "conversions", "revenue"],
        postgresql_where=text("conversions <> 0 OR revenue <> 0"),
        sqlite_where=text("conversions <> 0 OR revenue <> 0"),
    ),
    Index(
        "ix_metrics_referrer_rollups_referrals",
        "program_id",
        "grain",
        "bucket_start",
        postgresql_include=["referrer_id", "referrals"],
        postgresql_where=text("referrals <> 0"),
        sqlite_where=text("referrals <> 0"),
    ),
    # ...and by a count through these: a month's compacted rows in order (migration 0012).
    *(
        Index(
            f"ix_metrics_referrer_rollups_heads_{measure}",
            "program_id",
            "bucket_start",
            measure,
            postgresql_include=["referrer_id"],
            postgresql_where=text(heads_predicate(measure)),
            sqlite_where=text(heads_predicate(measure)),
        )
        for measure in HEAD_MEASURES
    ),
    Index(
        "ix_metrics_referrer_rollups_uncompacted",
        "program_id",
        "grain",
        "bucket_start",
        "unit",
        "referrer_id",
        postgresql_where=text("NOT compacted"),
        sqlite_where=text("NOT compacted"),
    ),
)

ROLLUP_TABLES = (program_rollups, channel_rollups, referrer_rollups)
