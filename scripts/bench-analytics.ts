/**
 * `npm run bench:analytics`: the analytics store on both backends, side by side in one run — rows,
 * on-disk size (TimescaleDB before and after compressing history older than 30 days: the compression
 * ratio) and query times (the reports' aggregate reads and raw-history scans), native vs TimescaleDB
 * (the speed-up). Writes bench/analytics.json.
 *
 * Both stores live in one private PostgreSQL cluster that preloads TimescaleDB (same server, same
 * settings, same cache), one database each; the TimescaleDB one has the extension, the native one
 * does not. The same rows are generated in SQL on both (deterministic, no random()), spread evenly
 * over `--days` days up to now. Every query's answer must be identical on both or nothing is reported.
 * `-- --rows=N` (card movements and decisions each, default 500,000), `--days=N` (default 180),
 * `--runs=N` (timed runs per query, default 5; the median is reported).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import {
  type AnalyticsBackend,
  ensurePartitions,
  refreshAggregates,
  setUpAnalytics,
} from '../reconciler/analytics/index.ts';
import { createDatabase, type Database, type Sql } from '../shared/db/client.ts';
import { startTimescaleCluster } from '../test/support/timescale.ts';

const arg = (name: string, fallback: number) =>
  Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);
const ROWS = arg('rows', 500_000);
const DAYS = arg('days', 180);
const RUNS = arg('runs', 5);
const USERS = 5_000;
const HISTORY = { compressAfterDays: 30, retentionDays: 730 };
const DAY_MS = 86_400_000;
const loads = () => loadavg().map((load) => Math.round(load * 100) / 100);
const ms = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e6;
const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

const loadAtStart = loads();
const end = new Date(Math.floor(Date.now() / DAY_MS) * DAY_MS);
const start = new Date(end.getTime() - DAYS * DAY_MS);
const cluster = await startTimescaleCluster();
const stores = {} as Record<AnalyticsBackend, Database>;

/** The same card movements and decisions on either store, in SQL, spread evenly over [start, end). */
async function generate(sql: Sql, backend: AnalyticsBackend): Promise<number> {
  for (const table of ['card_spend', 'decisions'] as const) {
    await ensurePartitions(sql, backend, table, start.getTime(), end.getTime());
  }
  const began = process.hrtime.bigint();
  const stepMs = (end.getTime() - start.getTime()) / ROWS;
  const user = `md5('u' || (i * 7919 % ${USERS}))::uuid`;
  const at = `$1::timestamptz + (i - 1) * interval '${stepMs} milliseconds'`;
  await sql.unsafe(
    `insert into analytics.card_spend (occurred_at, transfer_id, user_id, authorization_id, transaction_id, kind,
       amount_cents, merchant_category_code)
     select ${at}, i, ${user}, 'iauth_b' || i, 'ipi_b' || i,
       case when i % 20 = 0 then 'refund' else 'capture' end,
       case when i % 20 = 0 then -((i * 31) % 5000 + 100) else (i * 31) % 5000 + 100 end,
       (array['5411','5812','4121','5999','5541','5912','7011','4511'])[i % 8 + 1]
     from generate_series(1::bigint, ${ROWS}) i`,
    [start.toISOString()],
  );
  await sql.unsafe(
    `insert into analytics.decisions (decided_at, decision_id, user_id, approved, reason, requested_cents,
       approved_cents, source)
     select ${at}, 'dec_b' || i, ${user}, i % 10 <> 0,
       case when i % 10 <> 0 then 'approved' when i % 30 = 0 then 'blocked_mcc' else 'insufficient_credit' end,
       (i * 37) % 9000 + 100, case when i % 10 <> 0 then (i * 37) % 9000 + 100 else 0 end,
       case when i % 50 = 0 then 'postgres' else 'redis' end
     from generate_series(1::bigint, ${ROWS}) i`,
    [start.toISOString()],
  );
  await refreshAggregates(sql, backend);
  await sql.unsafe('analyze');
  return ms(began);
}

/** Bytes of the series tables and the aggregates (indexes and TOAST included). */
async function sizes(
  sql: Sql,
  backend: AnalyticsBackend,
): Promise<{ seriesBytes: number; aggregateBytes: number }> {
  if (backend === 'native') {
    const [row] = await sql<{ series: string; aggregates: string }[]>`
      select (select sum(pg_total_relation_size(relid)) from (
          select relid from pg_partition_tree('analytics.card_spend')
          union all select relid from pg_partition_tree('analytics.decisions')) t)::text as series,
        (pg_total_relation_size('analytics.spend_daily') + pg_total_relation_size('analytics.decisions_hourly'))::text as aggregates`;
    return { seriesBytes: Number(row?.series), aggregateBytes: Number(row?.aggregates) };
  }
  const [row] = await sql<{ series: string; aggregates: string }[]>`
    select (hypertable_size('analytics.card_spend') + hypertable_size('analytics.decisions'))::text as series,
      (select sum(hypertable_size(format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)::regclass))
         from timescaledb_information.continuous_aggregates where view_schema = 'analytics')::text as aggregates`;
  return { seriesBytes: Number(row?.series), aggregateBytes: Number(row?.aggregates) };
}

const someUser = `md5('u' || ${(42 * 7919) % USERS})::uuid`;
const recentFrom = new Date(end.getTime() - 7 * DAY_MS).toISOString();
/** The queries timed on both stores: [name, what it reads, SQL]. */
const QUERIES: [string, string, string][] = [
  [
    'spend_by_day_90d',
    'aggregate (the spend-by-day report)',
    `select to_char(day at time zone 'UTC', 'YYYY-MM-DD') as day, mcc, spend_cents::text from analytics.spend_daily
     where day >= '${new Date(end.getTime() - 90 * DAY_MS).toISOString()}' order by 1, 2`,
  ],
  [
    'approval_rate_90d',
    'aggregate (the approval-rate report)',
    `select to_char(hour at time zone 'UTC', 'YYYY-MM-DD"T"HH24') as hour, sum(decisions)::text,
       coalesce(sum(decisions) filter (where approved), 0)::text
     from analytics.decisions_hourly where hour >= '${new Date(end.getTime() - 90 * DAY_MS).toISOString()}'
     group by 1 order by 1`,
  ],
  [
    'spend_by_mcc_all_history',
    'raw scan of every card movement (mostly compressed on TimescaleDB)',
    `select merchant_category_code, sum(amount_cents)::text, count(*)::text from analytics.card_spend
     group by 1 order by 1`,
  ],
  [
    'declines_by_reason_all_history',
    'raw scan of every decision (mostly compressed on TimescaleDB)',
    `select reason, count(*)::text, sum(requested_cents)::text from analytics.decisions where not approved
     group by 1 order by 1`,
  ],
  [
    'one_user_history',
    "one user's movements over all history (segment by user on TimescaleDB; no user index on native)",
    `select occurred_at, transfer_id::text, amount_cents::text from analytics.card_spend
     where user_id = ${someUser} order by occurred_at desc, transfer_id`,
  ],
  [
    'last_7_days_spend',
    'raw scan of the uncompressed recent week',
    `select user_id::text, sum(amount_cents)::text from analytics.card_spend where occurred_at >= '${recentFrom}'
     group by 1 order by 2 desc, 1 limit 20`,
  ],
];

async function timeQuery(sql: Sql, text: string): Promise<{ medianMs: number; answer: string }> {
  const answer = JSON.stringify(await sql.unsafe(text)); // warm-up, and the answer to compare
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const began = process.hrtime.bigint();
    await sql.unsafe(text);
    times.push(ms(began));
  }
  times.sort((a, b) => a - b);
  return { medianMs: round(times[Math.floor(times.length / 2)]!, 2), answer };
}

try {
  const admin = createDatabase({ url: cluster.url, poolMax: 1, applicationName: 'bench-analytics' });
  await admin.sql`create database bench_native`;
  await admin.sql`create database bench_timescale`;
  await admin.close();
  const options = { poolMax: 2, statementTimeoutMs: 600_000, applicationName: 'bench-analytics' };
  stores.native = createDatabase({ url: cluster.url.replace(/\/postgres$/, '/bench_native'), ...options });
  stores.timescaledb = createDatabase({
    url: cluster.url.replace(/\/postgres$/, '/bench_timescale'),
    ...options,
  });
  await stores.timescaledb.sql`create extension timescaledb`;
  const result: Record<string, unknown> = {};
  const load: Record<string, number> = {};
  for (const backend of ['native', 'timescaledb'] as const) {
    const sql = stores[backend].sql;
    if ((await setUpAnalytics(sql, undefined, HISTORY)) !== backend)
      throw new Error(`${backend}: wrong backend`);
    load[backend] = round(await generate(sql, backend), 0);
  }
  const native = await sizes(stores.native.sql, 'native');
  const timescaleBefore = await sizes(stores.timescaledb.sql, 'timescaledb');
  // Compress what the policy would (chunks older than compressAfterDays), by running its jobs now.
  const ts = stores.timescaledb.sql;
  const compressBegan = process.hrtime.bigint();
  const jobs = await ts<{ id: number }[]>`select job_id as id from timescaledb_information.jobs
    where proc_name = 'policy_compression' and hypertable_name in ('card_spend', 'decisions')`;
  for (const job of jobs) await ts.unsafe(`call run_job(${job.id})`);
  const compressMs = round(ms(compressBegan), 0);
  await ts.unsafe('analyze');
  const timescaleAfter = await sizes(ts, 'timescaledb');
  const [chunks] = await ts<{ total: number; compressed: number; before: string; after: string }[]>`
    select count(*)::int as total, count(*) filter (where is_compressed)::int as compressed,
      (select sum(before_compression_total_bytes) from (
         select * from hypertable_compression_stats('analytics.card_spend')
         union all select * from hypertable_compression_stats('analytics.decisions')) s)::text as before,
      (select sum(after_compression_total_bytes) from (
         select * from hypertable_compression_stats('analytics.card_spend')
         union all select * from hypertable_compression_stats('analytics.decisions')) s)::text as after
    from timescaledb_information.chunks where hypertable_schema = 'analytics'
      and hypertable_name in ('card_spend', 'decisions')`;
  const queries: Record<string, unknown> = {};
  for (const [name, reads, text] of QUERIES) {
    const n = await timeQuery(stores.native.sql, text);
    const t = await timeQuery(ts, text);
    if (n.answer !== t.answer)
      throw new Error(`${name}: the backends answered differently; nothing reported`);
    queries[name] = {
      reads,
      rows: JSON.parse(n.answer).length,
      nativeMs: n.medianMs,
      timescaledbMs: t.medianMs,
      speedUp: round(n.medianMs / t.medianMs, 2),
    };
  }
  const mb = (bytes: number) => round(bytes / 1_048_576, 1);
  Object.assign(result, {
    measuredAt: new Date().toISOString(),
    machine: 'this project 2-core machine, shared with other work while measuring: figures are noisy',
    loadAverageAtStart: loadAtStart,
    loadAverageAtEnd: loads(),
    rows: { cardSpend: ROWS, decisions: ROWS, users: USERS, days: DAYS },
    loadMs: load,
    onDiskMB: {
      native: { series: mb(native.seriesBytes), aggregates: mb(native.aggregateBytes) },
      timescaledbUncompressed: {
        series: mb(timescaleBefore.seriesBytes),
        aggregates: mb(timescaleBefore.aggregateBytes),
      },
      timescaledbCompressed: {
        series: mb(timescaleAfter.seriesBytes),
        aggregates: mb(timescaleAfter.aggregateBytes),
      },
    },
    compression: {
      compressAfterDays: HISTORY.compressAfterDays,
      chunks: chunks?.total,
      compressedChunks: chunks?.compressed,
      compressMs,
      // Of the compressed chunks alone: their size before over after.
      ratio: round(Number(chunks?.before) / Number(chunks?.after), 1),
      // All series data: native on-disk size over TimescaleDB's after compression.
      nativeOverTimescaledb: round(native.seriesBytes / timescaleAfter.seriesBytes, 1),
    },
    queryMedianMs: queries,
    runsPerQuery: RUNS,
  });
  mkdirSync('bench', { recursive: true });
  writeFileSync('bench/analytics.json', `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\nwrote bench/analytics.json\n`);
} finally {
  await stores.native?.close();
  await stores.timescaledb?.close();
  cluster.destroy();
}
