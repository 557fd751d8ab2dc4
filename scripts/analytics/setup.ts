/**
 * Creates the analytics objects on the analytics connection, for whichever backend it offers.
 * Safe to run repeatedly (every statement is `if not exists` or guarded).
 *
 * native: each series table is range-partitioned by month on its time column, with a default
 * partition as a safety net (ingestion creates the month's partition before writing, so the default
 * stays empty); the aggregates are materialized views with unique indexes, refreshed CONCURRENTLY.
 *
 * timescaledb (NOT RUN here: the extension is not installed on these machines; written against
 * TimescaleDB 2.13+'s documented API): the same tables become hypertables (`create_hypertable` with
 * `by_range`), the aggregates continuous aggregates (`timescaledb.continuous`, real-time:
 * `materialized_only = false`) with refresh policies, and older chunks are compressed
 * (`timescaledb.compress`, `add_compression_policy`).
 */
import type { Sql } from '../../shared/db/client.ts';
import { type AnalyticsBackend, detectBackend, SERIES, type SeriesTable, TABLES_SQL } from './backend.ts';

/** The aggregate views' bodies, shared by both backends (bucketing expression aside). */
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
  const views = viewsSql((width, column) => `date_trunc('${width.slice(2)}', ${column})`, '', 'with no data');
  return `${tables}
${defaults}
${views}
create unique index if not exists spend_daily_key on analytics.spend_daily (day, mcc);
create unique index if not exists decisions_hourly_key on analytics.decisions_hourly (hour, approved, reason);
create index if not exists risk_snapshots_user on analytics.risk_snapshots (user_id, taken_at desc);
`;
}

/** TimescaleDB variant — not run on these machines (see the file comment). */
export function timescaleSetupSql(): string {
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
  const compression = Object.entries(SERIES)
    .map(
      ([t, column]) => `alter table analytics.${t} set (timescaledb.compress,
  timescaledb.compress_segmentby = 'user_id', timescaledb.compress_orderby = '${column} desc');
select add_compression_policy('analytics.${t}', compress_after => interval '30 days', if_not_exists => true);`,
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
`;
}

/** Creates everything for the detected backend. Returns the backend used. */
export async function setUpAnalytics(sql: Sql, backend?: AnalyticsBackend): Promise<AnalyticsBackend> {
  const chosen = backend ?? (await detectBackend(sql));
  const script = chosen === 'timescaledb' ? timescaleSetupSql() : nativeSetupSql();
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
