/**
 * Creates the analytics objects on the analytics connection, for whichever backend it offers.
 * Safe to run repeatedly (every statement is `if not exists` or guarded).
 *
 * native: each series table is range-partitioned by month on its time column, with a default
 * partition as a safety net (ingestion creates the month's partition before writing, so the default
 * stays empty); the aggregates are materialized views with unique indexes, refreshed CONCURRENTLY;
 * retention drops whole monthly partitions (`applyRetention`).
 *
 * timescaledb (2.25, built from the team's vendored source in dev and CI — scripts/timescaledb-install.sh):
 * the same tables become hypertables (`create_hypertable` with `by_range`, 7-day chunks), the
 * aggregates continuous aggregates (`timescaledb.continuous`, real-time: `materialized_only = false`)
 * with refresh policies; chunks older than `compressAfterDays` are compressed (columnar,
 * `add_compression_policy`) and chunks older than `retentionDays` dropped (`add_retention_policy`), by
 * TimescaleDB's own job scheduler. A changed setting replaces its policy on the next setup.
 */
import type { Sql } from '../../shared/db/client.ts';
import { type AnalyticsBackend, detectBackend, SERIES, type SeriesTable, TABLES_SQL } from './backend.ts';

/** How long history stays uncompressed and how long it is kept at all (shared/config.ts `analyticsHistory`). */
export interface AnalyticsHistory {
  compressAfterDays: number;
  retentionDays: number;
}
/** The configuration's defaults (ANALYTICS_COMPRESS_AFTER_DAYS, ANALYTICS_RETENTION_DAYS). */
export const DEFAULT_HISTORY: AnalyticsHistory = { compressAfterDays: 30, retentionDays: 730 };

const AGGREGATES = ['spend_daily', 'decisions_hourly'] as const;
/** The column whose value the rows of one compressed batch share (see timescaleSetupSql). */
const SEGMENT_BY: Record<SeriesTable, string> = {
  card_spend: 'merchant_category_code',
  decisions: 'reason',
  risk_snapshots: 'user_id',
  hold_snapshots: 'user_id',
};
/** Each series table's primary key besides its time column (and the segment column). */
const ROW_KEY: Record<SeriesTable, readonly string[]> = {
  card_spend: ['transfer_id'],
  decisions: ['decision_id'],
  risk_snapshots: [],
  hold_snapshots: ['authorization_id'],
};

/** The aggregate views' bodies, shared by both backends (bucketing expression aside). Buckets are UTC. */
function viewsSql(
  bucket: (width: '1 day' | '1 hour', column: string) => string,
  withClause: string,
  tail: string,
): string {
  return `
create materialized view if not exists analytics.spend_daily ${withClause} as
select ${bucket('1 day', 'occurred_at')} as day, merchant_category_code as mcc,
  sum(amount_cents)::bigint as spend_cents,
  count(*) filter (where kind = 'capture') as captures,
  count(*) filter (where kind = 'refund') as refunds
from analytics.card_spend
group by 1, 2 ${tail};
create materialized view if not exists analytics.decisions_hourly ${withClause} as
select ${bucket('1 hour', 'decided_at')} as hour, approved, reason,
  count(*) as decisions, sum(approved_cents)::bigint as approved_cents
from analytics.decisions
group by 1, 2, 3 ${tail};
`;
}

export function nativeSetupSql(): string {
  const tables = TABLES_SQL.replace(/PARTITION_CLAUSE\((\w+)\)/g, 'partition by range ($1)');
  const defaults = Object.keys(SERIES)
    .map((t) => `create table if not exists analytics.${t}_default partition of analytics.${t} default;`)
    .join('\n');
  // date_trunc with an explicit zone: UTC days and hours whatever the session's TimeZone (TimescaleDB's
  // time_bucket on timestamptz buckets in UTC too, so both backends draw the same lines).
  const views = viewsSql(
    (width, column) => `date_trunc('${width.slice(2)}', ${column}, 'UTC')`,
    '',
    'with no data',
  );
  return `${tables}
${defaults}
${views}
create unique index if not exists spend_daily_key on analytics.spend_daily (day, mcc);
create unique index if not exists decisions_hourly_key on analytics.decisions_hourly (hour, approved, reason);
create index if not exists risk_snapshots_user on analytics.risk_snapshots (user_id, taken_at desc);
`;
}

const days = (n: number) => `interval '${n} days'`;

/**
 * A policy `add` call guarded so that it is added once and replaced when its setting changed
 * (`if_not_exists` alone keeps an old policy and only warns).
 */
function policySql(
  proc: string,
  relation: string,
  key: string,
  value: string,
  add: string,
  remove: string,
): string {
  const [schema, name] = relation.split('.');
  // timescaledb_information.jobs names a continuous aggregate's policies by the view's own name.
  return `do $$ begin
  if exists (select 1 from timescaledb_information.jobs
      where proc_name = '${proc}' and hypertable_schema = '${schema}' and hypertable_name = '${name}'
        and (config->>'${key}')::interval <> ${value}) then
    perform ${remove}('${relation}');
  end if;
end $$;
select ${add}('${relation}', ${key} => ${value}, if_not_exists => true);`;
}

/** TimescaleDB variant: hypertables, continuous aggregates, compression and retention policies. */
export function timescaleSetupSql(history: AnalyticsHistory = DEFAULT_HISTORY): string {
  const tables = TABLES_SQL.replace(/ PARTITION_CLAUSE\(\w+\)/g, '');
  const hypertables = Object.entries(SERIES)
    .map(
      ([t, column]) =>
        `select create_hypertable('analytics.${t}', by_range('${column}', interval '7 days'), if_not_exists => true);`,
    )
    .join('\n');
  const views = viewsSql(
    (width, column) => `time_bucket(interval '${width}', ${column})`,
    'with (timescaledb.continuous, timescaledb.materialized_only = false)',
    'with no data',
  );
  // Segments (rows compressed together share the value) hold many rows each: card movements by
  // merchant category and decisions by reason — the reports group by those, and one user has only a
  // few movements a week, so segmenting those by user made batches of one row and compressed data
  // larger than the original (bench:analytics, first run) — while snapshots (one row per user every
  // snapshot) segment by user. Inside a segment newest first, then the rest of the row's key, so that
  // ingestion's `on conflict do nothing` into a compressed chunk narrows its check by the batches'
  // metadata. Compression is switched on once: its settings cannot change while chunks are compressed.
  const compression = Object.entries(SERIES)
    .map(
      ([t, column]) => `do $$ begin
  if not exists (select 1 from timescaledb_information.hypertables
      where hypertable_schema = 'analytics' and hypertable_name = '${t}' and compression_enabled) then
    alter table analytics.${t} set (timescaledb.compress,
      timescaledb.compress_segmentby = '${SEGMENT_BY[t as SeriesTable]}', timescaledb.compress_orderby = '${[`${column} desc`, ...ROW_KEY[t as SeriesTable]].join(', ')}');
  end if;
end $$;
${policySql('policy_compression', `analytics.${t}`, 'compress_after', days(history.compressAfterDays), 'add_compression_policy', 'remove_compression_policy')}`,
    )
    .join('\n');
  const retention = [...Object.keys(SERIES), ...AGGREGATES]
    .map((t) =>
      policySql(
        'policy_retention',
        `analytics.${t}`,
        'drop_after',
        days(history.retentionDays),
        'add_retention_policy',
        'remove_retention_policy',
      ),
    )
    .join('\n');
  return `${tables}
${hypertables}
${views}
select add_continuous_aggregate_policy('analytics.spend_daily', start_offset => interval '3 days',
  end_offset => interval '1 hour', schedule_interval => interval '1 hour', if_not_exists => true);
select add_continuous_aggregate_policy('analytics.decisions_hourly', start_offset => interval '1 day',
  end_offset => interval '5 minutes', schedule_interval => interval '5 minutes', if_not_exists => true);
${compression}
${retention}
`;
}

/** Creates everything for the detected backend. Returns the backend used. */
export async function setUpAnalytics(
  sql: Sql,
  backend?: AnalyticsBackend,
  history: AnalyticsHistory = DEFAULT_HISTORY,
): Promise<AnalyticsBackend> {
  const chosen = backend ?? (await detectBackend(sql));
  const script = chosen === 'timescaledb' ? timescaleSetupSql(history) : nativeSetupSql();
  // One transaction, serialised across concurrent setups by an advisory lock.
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(7431200)`;
    await tx.unsafe(script);
  });
  return chosen;
}

const monthStart = (ms: number) => {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
};
const nextMonth = (ms: number) => {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
};

/**
 * Native backend: makes sure a monthly partition exists for every month in [fromMs, toMs]. A no-op
 * on TimescaleDB (chunks are created on insert). Returns the partitions it created.
 */
export async function ensurePartitions(
  sql: Sql,
  backend: AnalyticsBackend,
  table: SeriesTable,
  fromMs: number,
  toMs: number,
): Promise<string[]> {
  if (backend === 'timescaledb') return [];
  const created: string[] = [];
  for (let m = monthStart(fromMs); m <= toMs; m = nextMonth(m)) {
    const d = new Date(m);
    const name = `${table}_y${d.getUTCFullYear()}m${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
    const [exists] = await sql<{ r: string | null }[]>`select to_regclass(${`analytics.${name}`})::text as r`;
    if (exists?.r != null) continue;
    const from = new Date(m).toISOString();
    const to = new Date(nextMonth(m)).toISOString();
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(7431201)`;
      await tx.unsafe(
        `create table if not exists analytics.${name} partition of analytics.${table} for values from ('${from}') to ('${to}')`,
      );
    });
    created.push(name);
  }
  return created;
}

/** Brings the aggregates up to date: REFRESH … CONCURRENTLY (native) or refresh_continuous_aggregate. */
export async function refreshAggregates(sql: Sql, backend: AnalyticsBackend): Promise<void> {
  for (const view of ['spend_daily', 'decisions_hourly']) {
    if (backend === 'timescaledb') {
      await sql.unsafe(`call refresh_continuous_aggregate('analytics.${view}', null, null)`);
      continue;
    }
    const [populated] = await sql<{ ok: boolean }[]>`
      select ispopulated as ok from pg_matviews where schemaname = 'analytics' and matviewname = ${view}`;
    // CONCURRENTLY needs a populated view; the first refresh fills it plainly.
    await sql.unsafe(`refresh materialized view ${populated?.ok ? 'concurrently ' : ''}analytics.${view}`);
  }
}

/** The instant before which series data is dropped. */
export function retentionCutoff(history: AnalyticsHistory, now: Date): Date {
  return new Date(now.getTime() - history.retentionDays * 86_400_000);
}

/**
 * Drops history older than the retention. native: every monthly partition that ends at or before the
 * cutoff (the next aggregate refresh forgets its rows). timescaledb: its retention policies drop chunks
 * on TimescaleDB's own job scheduler, so nothing here. Both: the list of complete snapshots.
 * Returns the partitions dropped.
 */
export async function applyRetention(
  sql: Sql,
  backend: AnalyticsBackend,
  history: AnalyticsHistory,
  now = new Date(),
): Promise<string[]> {
  const cutoff = retentionCutoff(history, now);
  const dropped: string[] = [];
  if (backend === 'native') {
    for (const table of Object.keys(SERIES)) {
      const parts = await sql<{ name: string }[]>`
        select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = ${`analytics.${table}`}::regclass order by 1`;
      for (const { name } of parts) {
        const month = new RegExp(`^${table}_y(\\d{4})m(\\d{2})$`).exec(name);
        if (month === null) continue; // the default partition
        const endMs = Date.UTC(Number(month[1]), Number(month[2]), 1);
        if (endMs > cutoff.getTime()) continue;
        await sql.unsafe(`drop table if exists analytics.${name}`);
        dropped.push(name);
      }
    }
  }
  await sql`delete from analytics.snapshots where taken_at < ${cutoff}`;
  return dropped;
}
