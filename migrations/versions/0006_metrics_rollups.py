"""metrics rollups

Rollup tables for the metrics (per program and per utm channel by day and quarter hour, per
referrer by month and day), kept by triggers on clicks, referrals, conversions and rewards in
the transaction that writes each event; `metrics_rollups_rebuild(program)` recounts them from
the raw events (for COPY loads with triggers off, and for the backfill here). Postgres only: on
SQLite the tables exist (one schema) but stay empty, and the metrics count raw events.

Every trigger appends signed delta rows: what the changed rows counted before (-1) and after
(+1), summed per key, zero sums left out. A referral counts as converted at the referral's own
time, referrer and channel; the triggers on conversions lock the referrals whose converted state
they change (FOR NO KEY UPDATE, in id order) and read the state after the lock, so concurrent
purchases of one referral count it once (READ COMMITTED, the service's isolation level).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('metrics_program_rollups', 'metrics_channel_rollups', 'metrics_referrer_rollups')
SOURCES = ('clicks', 'referrals', 'conversions', 'rewards')
OPERATIONS = ('insert', 'update', 'delete')
ROLLUP_LOCK = 0x6D657472696373  # app.metrics.rollups.ROLLUP_LOCK
ORIGIN = "timestamptz '2000-01-01 00:00:00+00'"
MONTH = "date_trunc('month', {}, 'UTC')"  # a calendar month in UTC, whatever the session's zone
COSTED = "('pending', 'approved', 'paid')"
MEASURES = (
    'clicks', 'unique_clicks', 'referrals', 'converted_referrals', 'conversions', 'revenue',
    'reward_amount',
)
FACT_COLUMNS = 'program_id, at, referrer_id, s, m, c, unit, ' + ', '.join(MEASURES)
# Columns whose change moves a row's counts; an UPDATE that changes none of them writes nothing.
COUNTED = {
    'clicks': (
        'program_id', 'occurred_at', 'referrer_id', 'is_bot', 'is_duplicate', 'utm_source',
        'utm_medium', 'utm_campaign',
    ),
    'referrals': ('program_id', 'occurred_at', 'referrer_id', 'click_id'),
    'conversions': (
        'program_id', 'occurred_at', 'referrer_id', 'click_id', 'status', 'amount',
        'refunded_amount', 'referral_id',
    ),
    'rewards': ('conversion_id', 'unit', 'amount', f'status IN {COSTED}'),
}
CONVERSION_KEY = ('program_id', 'occurred_at', 'referrer_id', 'click_id')
CHANNEL = ('utm_source', 'utm_medium', 'utm_campaign')


def _columns(alias: str, names: Sequence[str]) -> str:
    return '(' + ', '.join(
        f'{alias}.{name}' if name.isidentifier() else f'({alias}.{name})' for name in names
    ) + ')'


def _channel(alias: str) -> str:
    return ', '.join(f"coalesce(nullif({alias}.{name}, ''), 'direct')" for name in CHANNEL)


NO_CHANNEL = "'direct', 'direct', 'direct'"


def _click_join(clicks: str, on: str, channel: bool) -> str:
    return f' LEFT JOIN {clicks} k ON k.id = {on}' if channel else ''


# --------------------------------------------------------------------------- facts
# Each returns a SELECT of FACT_COLUMNS: one signed row per counted event. With channel=False
# (the rebuild's pass for the referrer table) the channel is left out: no join to clicks.


def click_facts(rows: str, sign: int, channel: bool = True) -> str:
    return f"""
        SELECT k.program_id, k.occurred_at, k.referrer_id,
               {_channel('k') if channel else NO_CHANNEL}, ''::varchar,
               {sign}, CASE WHEN k.is_bot OR k.is_duplicate THEN 0 ELSE {sign} END,
               0, 0, 0, 0::numeric, 0::numeric
        FROM {rows} k"""


def referral_facts(
    rows: str, sign: int, clicks: str = 'clicks', converted: str = '', channel: bool = True
) -> str:
    # A referral is converted while an attributed conversion points at it (the state now).
    converted = converted or (
        'EXISTS (SELECT 1 FROM conversions v '
        "WHERE v.referral_id = r.id AND v.status = 'attributed')"
    )
    return f"""
        SELECT r.program_id, r.occurred_at, r.referrer_id,
               {_channel('k') if channel else NO_CHANNEL}, '',
               0, 0, {sign}, CASE WHEN {converted} THEN {sign} ELSE 0 END,
               0, 0::numeric, 0::numeric
        FROM {rows} r{_click_join(clicks, 'r.click_id', channel)}"""


def conversion_facts(rows: str, sign: int, clicks: str = 'clicks', channel: bool = True) -> str:
    return f"""
        SELECT v.program_id, v.occurred_at, v.referrer_id,
               {_channel('k') if channel else NO_CHANNEL}, '',
               0, 0, 0, 0, {sign}, {sign} * (v.amount - v.refunded_amount), 0::numeric
        FROM {rows} v{_click_join(clicks, 'v.click_id', channel)}
        WHERE v.status = 'attributed'"""


def reward_facts(
    rows: str,
    sign: int,
    conversions: str = 'conversions',
    clicks: str = 'clicks',
    channel: bool = True,
) -> str:
    # Rewards count at their conversion's time, referrer and channel.
    return f"""
        SELECT v.program_id, v.occurred_at, v.referrer_id,
               {_channel('k') if channel else NO_CHANNEL}, w.unit,
               0, 0, 0, 0, 0, 0::numeric, {sign} * w.amount
        FROM {rows} w JOIN {conversions} v ON v.id = w.conversion_id
             {_click_join(clicks, 'v.click_id', channel)}
        WHERE w.status IN {COSTED}"""


def converted_facts(touched: str) -> str:
    """Referrals whose converted state the statement changed: now minus before, per referral.

    `touched` is a relation (referral_id, before), before being the state without the statement.
    """
    return f"""
        SELECT r.program_id, r.occurred_at, r.referrer_id, {_channel('k')}, '',
               0, 0, 0, t.now::int - t.before::int, 0, 0::numeric, 0::numeric
        FROM (SELECT t.referral_id, t.before, EXISTS (
                  SELECT 1 FROM conversions v
                  WHERE v.referral_id = t.referral_id AND v.status = 'attributed') AS now
              FROM {touched} t) t
             JOIN referrals r ON r.id = t.referral_id
             LEFT JOIN clicks k ON k.id = r.click_id
        WHERE t.now <> t.before"""


def union(*parts: str) -> str:
    return '\n        UNION ALL'.join(parts)


# --------------------------------------------------------------------------- writing facts


def apply_facts(facts: str, *, before: str = '') -> str:
    """One statement: the facts summed into every rollup table, per key, zero sums left out.

    For the few rows a trigger sees: every grain straight from the facts.
    """
    measures = ', '.join(MEASURES)
    sums = ', '.join(f'sum(f.{name})' for name in MEASURES)
    nonzero = ' OR '.join(f'sum(f.{name}) <> 0' for name in MEASURES)
    grains = (
        "(VALUES ('day', interval '1 day'), ('quarter', interval '15 minutes')) AS g (grain, width)"
    )
    return f"""
        WITH {before}facts ({FACT_COLUMNS}) AS ({facts}
        ),
        program_rows AS (
            INSERT INTO metrics_program_rollups
                (program_id, grain, bucket_start, unit, {measures}, compacted)
            SELECT f.program_id, g.grain, date_bin(g.width, f.at, {ORIGIN}), f.unit, {sums}, false
            FROM facts f CROSS JOIN {grains}
            GROUP BY 1, 2, 3, 4 HAVING {nonzero}
        ),
        channel_rows AS (
            INSERT INTO metrics_channel_rollups
                (program_id, grain, bucket_start, unit, utm_source, utm_medium, utm_campaign,
                 {measures}, compacted)
            SELECT f.program_id, g.grain, date_bin(g.width, f.at, {ORIGIN}), f.unit, f.s, f.m,
                   f.c, {sums}, false
            FROM facts f CROSS JOIN {grains}
            GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING {nonzero}
        )
        INSERT INTO metrics_referrer_rollups
            (program_id, grain, bucket_start, unit, referrer_id, {measures}, compacted)
        SELECT f.program_id, g.grain, CASE g.grain WHEN 'month' THEN {MONTH.format('f.at')}
                                      ELSE date_bin(interval '1 day', f.at, {ORIGIN}) END,
               f.unit, f.referrer_id, {sums}, false
        FROM facts f CROSS JOIN (VALUES ('day'), ('month')) AS g (grain)
        WHERE f.referrer_id IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5 HAVING {nonzero}"""


def rebuild_facts(facts: str, *, before: str = '', compacted: str = 'false', deletes: str = '',
                referrer_facts: str = '') -> str:
    """The rebuild's statement: every event summed into every rollup table, zero sums left out.

    Written for millions of facts: channel quarter hours are summed from the facts; channel
    days, program quarter hours and program days from those (a day is 96 whole quarter hours
    of the same origin); referrer days from `referrer_facts` (the same events without their
    channel, so without a join to their click), and referrer months from those days.
    """
    measures = ', '.join(MEASURES)
    sums = ', '.join(f'sum({name})' for name in MEASURES)
    nonzero_sums = ' OR '.join(f'sum({name}) <> 0' for name in MEASURES)
    nonzero = ' OR '.join(f'{name} <> 0' for name in MEASURES)
    day = f"date_bin(interval '1 day', bucket_start, {ORIGIN})"
    referrers = 'referrer_facts' if referrer_facts else 'facts'
    extra = (
        f"referrer_facts ({FACT_COLUMNS}) AS NOT MATERIALIZED ({referrer_facts}\n        ),\n        "
        if referrer_facts else ''
    )
    return f"""
        WITH {before}{deletes}facts ({FACT_COLUMNS}) AS NOT MATERIALIZED ({facts}
        ),
        {extra}quarters AS MATERIALIZED (
            SELECT program_id, date_bin(interval '15 minutes', at, {ORIGIN}) AS bucket_start,
                   unit, s, m, c, {', '.join(f'sum({n}) AS {n}' for n in MEASURES)}
            FROM facts GROUP BY 1, 2, 3, 4, 5, 6
        ),
        channel_rows AS (
            INSERT INTO metrics_channel_rollups
                (program_id, grain, bucket_start, unit, utm_source, utm_medium, utm_campaign,
                 {measures}, compacted)
            SELECT program_id, 'quarter', bucket_start, unit, s, m, c, {measures}, {compacted}
            FROM quarters WHERE {nonzero}
            UNION ALL
            SELECT program_id, 'day', {day}, unit, s, m, c, {sums}, {compacted}
            FROM quarters GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING {nonzero_sums}
        ),
        program_rows AS (
            INSERT INTO metrics_program_rollups
                (program_id, grain, bucket_start, unit, {measures}, compacted)
            SELECT program_id, 'quarter', bucket_start, unit, {sums}, {compacted}
            FROM quarters GROUP BY 1, 2, 3, 4 HAVING {nonzero_sums}
            UNION ALL
            SELECT program_id, 'day', {day}, unit, {sums}, {compacted}
            FROM quarters GROUP BY 1, 2, 3, 4 HAVING {nonzero_sums}
        ),
        referrer_days AS MATERIALIZED (
            SELECT program_id, date_bin(interval '1 day', at, {ORIGIN}) AS bucket_start, unit,
                   referrer_id, {', '.join(f'sum({n}) AS {n}' for n in MEASURES)}
            FROM {referrers} WHERE referrer_id IS NOT NULL
            GROUP BY 1, 2, 3, 4
        )
        INSERT INTO metrics_referrer_rollups
            (program_id, grain, bucket_start, unit, referrer_id, {measures}, compacted)
        SELECT program_id, 'day', bucket_start, unit, referrer_id, {measures}, {compacted}
        FROM referrer_days WHERE {nonzero}
        UNION ALL
        SELECT program_id, 'month', {MONTH.format('bucket_start')}, unit, referrer_id, {sums},
               {compacted}
        FROM referrer_days GROUP BY 1, 2, 3, 4, 5 HAVING {nonzero_sums}
        -- A referrer's rows together: the leaderboard reads its top referrers' rows by referrer.
        ORDER BY 5, 2, 3"""


def changed(table: str) -> str:
    """CTEs changed_old / changed_new: the rows of an UPDATE whose counted columns changed."""
    old, new = _columns('o', COUNTED[table]), _columns('n', COUNTED[table])
    return f"""changed_old AS (
            SELECT o.* FROM old_rows o LEFT JOIN new_rows n ON n.id = o.id
            WHERE n.id IS NULL OR {old} IS DISTINCT FROM {new}
        ),
        changed_new AS (
            SELECT n.* FROM new_rows n LEFT JOIN old_rows o ON o.id = n.id
            WHERE o.id IS NULL OR {old} IS DISTINCT FROM {new}
        ),
        """


def nothing_changed(table: str) -> str:
    old, new = _columns('o', COUNTED[table]), _columns('n', COUNTED[table])
    return f"""
        IF NOT EXISTS (
            SELECT 1 FROM new_rows n FULL JOIN old_rows o ON o.id = n.id
            WHERE o.id IS NULL OR n.id IS NULL OR {old} IS DISTINCT FROM {new}
        ) THEN
            RETURN NULL;
        END IF;"""


def lock_touched_referrals(old: str | None, new: str | None) -> str:
    """Collect the referrals whose converted state may change (touched_ids), and lock them.

    A conversion counts for its referral while attributed; a referral is touched when a changed
    conversion pointed at it before the statement, or does now, and not both.
    """
    pointed_old = "CASE WHEN o.status = 'attributed' THEN o.referral_id END"
    pointed_new = "CASE WHEN n.status = 'attributed' THEN n.referral_id END"
    if old and new:
        pairs = (f'SELECT {pointed_old} AS was, {pointed_new} AS now '
                 f'FROM {old} o FULL JOIN {new} n ON n.id = o.id')
    elif new:
        pairs = f'SELECT NULL::uuid AS was, {pointed_new} AS now FROM {new} n'
    else:
        pairs = f'SELECT {pointed_old} AS was, NULL::uuid AS now FROM {old} o'
    return f"""
        SELECT array_agg(DISTINCT u.x ORDER BY u.x) INTO touched_ids
        FROM ({pairs}) p CROSS JOIN LATERAL (VALUES (p.was), (p.now)) AS u (x)
        WHERE u.x IS NOT NULL AND p.was IS DISTINCT FROM p.now;
        IF touched_ids IS NOT NULL THEN
            PERFORM 1 FROM referrals WHERE id = ANY (touched_ids) ORDER BY id FOR NO KEY UPDATE;
        END IF;"""


def touched_cte(old: str | None, new: str | None) -> str:
    """CTE touched (referral_id, before): the touched referrals' state without the statement.

    Read in the statement after the lock: a concurrent purchase of the same referral has
    committed by then (READ COMMITTED takes a new snapshot per statement), so it is counted once.
    """
    not_new = f'AND v.id NOT IN (SELECT id FROM {new})' if new else ''
    before_old = (
        f" OR EXISTS (SELECT 1 FROM {old} o WHERE o.referral_id = x.id "
        "AND o.status = 'attributed')" if old else ''
    )
    return f"""touched AS (
            SELECT x.id AS referral_id,
                   EXISTS (SELECT 1 FROM conversions v WHERE v.referral_id = x.id
                           AND v.status = 'attributed' {not_new}){before_old} AS before
            FROM unnest(touched_ids) AS x (id)
        ),
        """


def trigger_body(table: str, operation: str) -> str:
    """The PL/pgSQL body of the trigger on `table` for `operation`."""
    new = 'new_rows' if operation == 'insert' else 'changed_new'
    old = 'old_rows' if operation == 'delete' else 'changed_old'
    has_old, has_new = operation != 'insert', operation != 'delete'
    before = changed(table) if operation == 'update' else ''
    prelude = nothing_changed(table) if operation == 'update' else ''
    parts: list[str] = []
    facts = {'clicks': click_facts, 'referrals': referral_facts,
             'conversions': conversion_facts, 'rewards': reward_facts}[table]
    if has_old:
        parts.append(facts(old, -1))
    if has_new:
        parts.append(facts(new, 1))
    declare = ''
    if table == 'clicks' and operation == 'update':
        # What came through a click whose channel changed moves to the new channel.
        before += f"""rechanneled_old AS (
            SELECT o.* FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE {_columns('o', CHANNEL)} IS DISTINCT FROM {_columns('n', CHANNEL)}
        ),
        rechanneled_new AS (
            SELECT n.* FROM new_rows n JOIN rechanneled_old o ON o.id = n.id
        ),
        rechanneled_conversions AS (
            SELECT v.* FROM conversions v WHERE v.click_id IN (SELECT id FROM rechanneled_old)
        ),
        """
        referrals = 'referrals r0 WHERE r0.click_id IN (SELECT id FROM rechanneled_old)'
        referrals = f'(SELECT * FROM {referrals})'
        parts += [
            referral_facts(referrals, -1, 'rechanneled_old'),
            referral_facts(referrals, 1, 'rechanneled_new'),
            conversion_facts('rechanneled_conversions', -1, 'rechanneled_old'),
            conversion_facts('rechanneled_conversions', 1, 'rechanneled_new'),
            reward_facts('rewards', -1, 'rechanneled_conversions', 'rechanneled_old'),
            reward_facts('rewards', 1, 'rechanneled_conversions', 'rechanneled_new'),
        ]
    if table == 'conversions':
        declare = '\n    DECLARE touched_ids uuid[];'
        old_rows = 'old_rows' if has_old else None
        new_rows = 'new_rows' if has_new else None
        if operation != 'update':
            # Unattributed conversions count nowhere (and have no rewards yet, or any more).
            prelude += f"""
        IF NOT EXISTS (SELECT 1 FROM {old_rows or new_rows} WHERE status = 'attributed') THEN
            RETURN NULL;
        END IF;"""
        prelude += lock_touched_referrals(old_rows, new_rows)
        before += touched_cte(old_rows, new_rows)
        parts.append(converted_facts('touched'))
        if operation == 'update':
            # Rewards count at their conversion's key: they move when it changes.
            key_old, key_new = _columns('o', CONVERSION_KEY), _columns('n', CONVERSION_KEY)
            before += f"""moved_old AS (
            SELECT o.* FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE {key_old} IS DISTINCT FROM {key_new}
        ),
        moved_new AS (
            SELECT n.* FROM new_rows n JOIN moved_old o ON o.id = n.id
        ),
        """
            parts += [
                reward_facts('rewards', -1, 'moved_old'),
                reward_facts('rewards', 1, 'moved_new'),
            ]
    return f"""{declare}
    BEGIN{prelude}{apply_facts(union(*parts), before=before)};
        RETURN NULL;
    END"""


def rebuild_function() -> str:
    program = 'only_program IS NULL OR {}.program_id = only_program'
    deletes = ''.join(
        f'gone_{n} AS (DELETE FROM {t} x WHERE {program.format("x")}),\n        '
        for n, t in enumerate(TABLES)
    )
    converted = (
        "converted AS (SELECT DISTINCT referral_id FROM conversions x "
        "WHERE x.status = 'attributed' AND x.referral_id IS NOT NULL "
        f"AND ({program.format('x')})),\n        "
    )
    in_converted = 'r.id IN (SELECT referral_id FROM converted)'

    def facts(channel: bool) -> str:
        return union(
            click_facts('clicks', 1, channel) + f' WHERE {program.format("k")}',
            referral_facts('referrals', 1, converted=in_converted, channel=channel)
            + f' WHERE {program.format("r")}',
            conversion_facts('conversions', 1, channel=channel) + f' AND ({program.format("v")})',
            reward_facts('rewards', 1, channel=channel) + f' AND ({program.format("v")})',
        )

    statement = rebuild_facts(
        facts(True), before=converted, deletes=deletes, compacted='true',
        referrer_facts=facts(False),
    )
    return f"""
    CREATE FUNCTION metrics_rollups_rebuild(only_program uuid DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SET work_mem = '256MB' AS $$
    BEGIN
        -- Compaction takes the same lock: it must not sum rows this statement replaces.
        PERFORM pg_advisory_xact_lock({ROLLUP_LOCK});
        -- One statement, one snapshot: the rows it deletes and the events it counts agree, and
        -- the deltas of writers still in flight (invisible to it) stay, with their events.
        {statement};
    END
    $$"""


def create_triggers() -> None:
    for table in SOURCES:
        for operation in OPERATIONS:
            name = f'metrics_{table}_{operation}'
            # Generic plans: the statements run over a few changed rows, and planning them
            # anew per call (they take parameters) would cost more than running them.
            op.execute(
                f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql '
                f"SET plan_cache_mode = 'force_generic_plan' AS $$"
                f'{trigger_body(table, operation)}\n    $$'
            )
            referencing = {
                'insert': 'NEW TABLE AS new_rows',
                'update': 'OLD TABLE AS old_rows NEW TABLE AS new_rows',
                'delete': 'OLD TABLE AS old_rows',
            }[operation]
            op.execute(
                f'CREATE TRIGGER {name} AFTER {operation.upper()} ON {table} '
                f'REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {name}()'
            )
    op.execute(rebuild_function())
    op.execute(
        'CREATE FUNCTION metrics_after_truncate() RETURNS trigger LANGUAGE plpgsql AS $$\n'
        '    BEGIN\n'
        '        PERFORM metrics_rollups_rebuild(NULL);\n'
        '        RETURN NULL;\n'
        '    END\n'
        '    $$'
    )
    for table in SOURCES:
        op.execute(
            f'CREATE TRIGGER metrics_{table}_truncate AFTER TRUNCATE ON {table} '
            'FOR EACH STATEMENT EXECUTE FUNCTION metrics_after_truncate()'
        )


def drop_triggers() -> None:
    for table in SOURCES:
        op.execute(f'DROP TRIGGER IF EXISTS metrics_{table}_truncate ON {table}')
        for operation in OPERATIONS:
            op.execute(f'DROP TRIGGER IF EXISTS metrics_{table}_{operation} ON {table}')
            op.execute(f'DROP FUNCTION IF EXISTS metrics_{table}_{operation}()')
    op.execute('DROP FUNCTION IF EXISTS metrics_after_truncate()')
    op.execute('DROP FUNCTION IF EXISTS metrics_rollups_rebuild(uuid)')


def _key_columns() -> list[sa.Column]:
    return [
        sa.Column('program_id', sa.Uuid(), nullable=False),
        sa.Column('grain', sa.String(length=8), nullable=False),
        sa.Column('bucket_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('unit', sa.String(length=8), nullable=False),
    ]


def _measure_columns() -> list[sa.Column]:
    return [
        *(sa.Column(name, sa.Integer(), nullable=False) for name in MEASURES[:5]),
        *(sa.Column(name, sa.Numeric(precision=20, scale=4), nullable=False)
          for name in MEASURES[5:]),
        sa.Column('compacted', sa.Boolean(), nullable=False),
    ]


def _partial(predicate: str) -> dict[str, object]:
    return {'postgresql_where': sa.text(predicate), 'sqlite_where': sa.text(predicate)}


def upgrade() -> None:
    op.create_table('metrics_program_rollups', *_key_columns(), *_measure_columns())
    op.create_index('ix_metrics_program_rollups_program_id_grain', 'metrics_program_rollups',
                    ['program_id', 'grain', 'bucket_start'], unique=False)
    op.create_index('ix_metrics_program_rollups_uncompacted', 'metrics_program_rollups',
                    ['program_id', 'grain', 'bucket_start', 'unit'], unique=False,
                    **_partial('NOT compacted'))

    op.create_table(
        'metrics_channel_rollups',
        *_key_columns(),
        sa.Column('utm_source', sa.String(length=200), nullable=False),
        sa.Column('utm_medium', sa.String(length=200), nullable=False),
        sa.Column('utm_campaign', sa.String(length=200), nullable=False),
        *_measure_columns(),
    )
    op.create_index('ix_metrics_channel_rollups_program_id_grain', 'metrics_channel_rollups',
                    ['program_id', 'grain', 'bucket_start'], unique=False)
    op.create_index('ix_metrics_channel_rollups_uncompacted', 'metrics_channel_rollups',
                    ['program_id', 'grain', 'bucket_start', 'unit', 'utm_source', 'utm_medium',
                     'utm_campaign'], unique=False, **_partial('NOT compacted'))

    op.create_table(
        'metrics_referrer_rollups',
        *_key_columns(),
        sa.Column('referrer_id', sa.Uuid(), nullable=False),
        *_measure_columns(),
    )
    op.create_index('ix_metrics_referrer_rollups_program_id_grain', 'metrics_referrer_rollups',
                    ['program_id', 'grain', 'bucket_start'], unique=False)
    op.create_index('ix_metrics_referrer_rollups_referrer_id_grain', 'metrics_referrer_rollups',
                    ['referrer_id', 'grain', 'bucket_start'], unique=False)
    op.create_index('ix_metrics_referrer_rollups_conversions', 'metrics_referrer_rollups',
                    ['program_id', 'grain', 'bucket_start'], unique=False,
                    postgresql_include=['referrer_id', 'conversions', 'revenue'],
                    **_partial('conversions <> 0 OR revenue <> 0'))
    op.create_index('ix_metrics_referrer_rollups_referrals', 'metrics_referrer_rollups',
                    ['program_id', 'grain', 'bucket_start'], unique=False,
                    postgresql_include=['referrer_id', 'referrals'],
                    **_partial('referrals <> 0'))
    op.create_index('ix_metrics_referrer_rollups_uncompacted', 'metrics_referrer_rollups',
                    ['program_id', 'grain', 'bucket_start', 'unit', 'referrer_id'], unique=False,
                    **_partial('NOT compacted'))

    if op.get_bind().dialect.name == 'postgresql':
        create_triggers()
        # Backfill: what is stored now, summed once.
        op.execute('SELECT metrics_rollups_rebuild(NULL)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        drop_triggers()
    for table in reversed(TABLES):
        op.drop_table(table)
