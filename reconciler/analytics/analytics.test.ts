// Proves both analytics backends — native (monthly partitions + materialized views, on a database of the shared server) and TimescaleDB (hypertables, continuous aggregates, compression, retention, on a private cluster that preloads it) — ingest the same generated financial data and return the same, known numbers for every risk report, also after TimescaleDB compressed the old history and after a re-ingestion, and that both drop history past the retention.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database, type Sql } from '../../shared/db/client.ts';
import { insertTransfers } from '../../shared/db/queries/ledger.ts';
import {
  cloneTemplateDatabase,
  dropDatabase,
  setUpServices,
  type TestServices,
} from '../../test/support/db.ts';
import { seedAsset, seedUser, WETH } from '../../test/support/fixtures.ts';
import type { PostgresCluster } from '../../test/support/processes.ts';
import { startTimescaleCluster } from '../../test/support/timescale.ts';
import { type AnalyticsBackend, detectBackend } from './backend.ts';
import {
  type AnalyticsHistory,
  applyRetention,
  approvalRateByHour,
  closestToLiquidation,
  declineReasonsByHour,
  ensurePartitions,
  healthFactorDistribution,
  holdsByAge,
  REPORTS,
  refreshAggregates,
  refreshAnalytics,
  setUpAnalytics,
  spendByDayAndCategory,
  timescaleSetupSql,
} from './index.ts';
import { readAsAnalytics } from './read-as.ts';

const PRICE = 300_000_000_000n; // $3,000.00 with 8 decimals
const ONE_WETH = 10n ** 18n; // value 300,000 cents; × 82.5 % = 247,500 cents of threshold value
const DAY_MS = 86_400_000;
const HISTORY: AnalyticsHistory = { compressAfterDays: 30, retentionDays: 730 };
let services: TestServices;
let nativeUrl: string;
let cluster: PostgresCluster;
const stores = {} as Record<AnalyticsBackend, Database>;
const users: Record<string, string> = {};
// One instant for both stores' ingestion and snapshots.
const now = new Date();
// A capture of yesterday: in a chunk TimescaleDB leaves uncompressed (younger than compressAfterDays).
const recent = new Date(Math.floor((now.getTime() - DAY_MS) / DAY_MS) * DAY_MS + 13 * 3_600_000);
const recentDay = recent.toISOString().slice(0, 10);
// A capture older than the retention: never copied into either store.
const expired = new Date(now.getTime() - (HISTORY.retentionDays + 40) * DAY_MS);

const day = (d: string, hh = '12') => new Date(`${d}T${hh}:00:00Z`);
const count = async (sql: Sql, table: string) =>
  (await sql.unsafe<{ n: number }[]>(`select count(*)::int as n from ${table}`))[0]?.n;

/** Runs each of the store's TimescaleDB policy jobs of one kind now, as its scheduler would. */
async function runPolicies(sql: Sql, proc: string, relations: readonly string[]): Promise<number> {
  const jobs = await sql<{ id: number }[]>`
    select job_id as id from timescaledb_information.jobs
    where proc_name = ${proc} and hypertable_schema = 'analytics' and hypertable_name = any(${relations}::text[])
    order by job_id`;
  for (const job of jobs) await sql.unsafe(`call run_job(${job.id})`);
  return jobs.length;
}

beforeAll(async () => {
  services = await setUpServices();
  const sql = services.database.sql;
  nativeUrl = await cloneTemplateDatabase();
  stores.native = createDatabase({ url: nativeUrl, applicationName: 'credana-analytics-test' });
  // A server whose TimeZone is not UTC: days and hours must still be UTC ones on both backends.
  cluster = await startTimescaleCluster({ timezone: 'America/New_York' });
  const admin = createDatabase({ url: cluster.url, poolMax: 1, applicationName: 'credana-analytics-test' });
  await admin.sql`create database analytics`;
  await admin.close();
  stores.timescaledb = createDatabase({
    url: cluster.url.replace(/\/postgres$/, '/analytics'),
    applicationName: 'credana-analytics-test',
  });
  await stores.timescaledb.sql`create extension timescaledb`;
  await seedAsset(sql, services.redis, services.prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
  // Health factors: 247,500 / debt → 1.0, 1.2375, 2.0, and one user with no debt.
  for (const [name, debt] of [
    ['hf100', 247_500n],
    ['hf124', 200_000n],
    ['hf200', 123_750n],
    ['none', 0n],
  ] as const) {
    users[name] = (
      await seedUser(sql, { collateral: [{ assetId: 'WETH', amountBase: ONE_WETH }], unsettledCents: debt })
    ).userId;
  }
  const spender = users['none']!;
  // Card movements: [ref suffix, kind, cents, authorization mcc | null, payload mcc, created]
  const movements: [string, 'capture' | 'refund', bigint, string | null, string, Date][] = [
    ['a', 'capture', 1_000n, '5411', '5411', day('2026-01-10', '09')],
    ['b', 'capture', 2_000n, '5411', '5411', day('2026-01-10', '15')],
    ['c', 'refund', 500n, '5411', '5411', day('2026-01-10', '18')],
    ['d', 'capture', 700n, '5812', '5812', day('2026-01-10', '20')],
    ['e', 'capture', 4_000n, '5411', '5411', day('2026-01-11', '08')],
    ['f', 'capture', 900n, null, '4121', day('2026-01-11', '09')], // force capture: no authorization
    ['g', 'capture', 333n, '5411', '5411', day('2026-02-03', '10')], // another month: another partition
    ['h', 'capture', 1_234n, '5411', '5411', recent],
    ['i', 'capture', 9_999n, '5411', '5411', expired],
  ];
  for (const [suffix, kind, cents, authMcc, payloadMcc, created] of movements) {
    const authorizationId = authMcc === null ? null : `iauth_an_${suffix}`;
    if (authorizationId !== null) {
      await sql`insert into authorizations (id, user_id, card_id, status, approved, decision, decision_source, merchant_category_code)
        values (${authorizationId}, ${spender}, 'ic_x', 'closed', true, 'approved', 'redis', ${authMcc})`;
    }
    const createdS = Math.floor(created.getTime() / 1000);
    await sql`insert into card_events (id, type, user_id, object_id, payload, created_at) values (${`evt_an_${suffix}`},
      'issuing_transaction.created', ${spender}, ${`ipi_an_${suffix}`},
      ${sql.json({ id: `evt_an_${suffix}`, data: { object: { id: `ipi_an_${suffix}`, created: createdS, merchant_data: { category_code: payloadMcc } } } })},
      ${created})`;
    await sql.begin((tx) =>
      insertTransfers(tx, [
        {
          ref: `lifecycle:evt_an_${suffix}`,
          kind,
          userId: spender,
          authorizationId,
          entries: [
            { account: 'user_unsettled', userId: spender, amountCents: kind === 'capture' ? cents : -cents },
            { account: 'program_card_spend', userId: null, amountCents: kind === 'capture' ? -cents : cents },
          ],
        },
      ]),
    );
  }
  // Decisions: 10:00 → 3 approved, 1 insufficient_credit; 11:00 → 1 approved, 1 blocked_mcc, 1 insufficient_credit.
  const decisions: [string, boolean, string][] = [
    ['10:05', true, 'approved'],
    ['10:10', true, 'approved'],
    ['10:20', true, 'partial'],
    ['10:30', false, 'insufficient_credit'],
    ['11:01', true, 'approved'],
    ['11:02', false, 'blocked_mcc'],
    ['11:03', false, 'insufficient_credit'],
  ];
  for (const [i, [time, approved, reason]] of decisions.entries()) {
    await sql`insert into decisions (id, event_id, authorization_id, user_id, card_id, approved, requested_cents, approved_cents, reason, source, latency_us, decided_at)
      values (${`dec_an_${i}`}, ${`evt_dec_${i}`}, ${`iauth_dec_${i}`}, ${spender}, 'ic_x', ${approved}, 1000, ${approved ? 1000 : 0}, ${reason}, 'redis', 300,
        ${new Date(`2026-01-10T${time}:00Z`)})`;
  }
  // Open holds aged 2 h, 2 days, 10 days and 12 days.
  for (const [i, ageH] of [2, 48, 240, 288].entries()) {
    await sql`insert into authorizations (id, user_id, card_id, status, approved, decision, decision_source, held_cents, approved_cents, created_at, expires_at)
      values (${`iauth_hold_${i}`}, ${spender}, 'ic_x', 'pending', true, 'approved', 'redis', ${100 * (i + 1)}, ${100 * (i + 1)},
        now() - ${`${ageH} hours`}::interval, now() + interval '5 days')`;
  }
  for (const backend of ['native', 'timescaledb'] as const) {
    const store = stores[backend].sql;
    expect(await detectBackend(store)).toBe(backend);
    expect(await setUpAnalytics(store, undefined, HISTORY)).toBe(backend);
    // Ingestion logs in as credana_reconciliation and reads as credana_analytics, as the scheduled job
    // does (production: on the read replica).
    await readAsAnalytics(services.sqlFor('credana_reconciliation'), (financial) =>
      refreshAnalytics({ financial, analytics: store, backend, history: HISTORY }, now),
    );
  }
  // TimescaleDB compresses the history older than compressAfterDays, as its scheduler would.
  const ts = stores.timescaledb.sql;
  expect(await runPolicies(ts, 'policy_compression', ['card_spend', 'decisions'])).toBe(2);
}, 120_000);

afterAll(async () => {
  await stores.native?.close();
  await stores.timescaledb?.close();
  if (nativeUrl !== undefined) await dropDatabase(nativeUrl);
  cluster?.destroy();
  await services?.close();
});

const january = { from: day('2026-01-01', '00'), to: day('2026-02-01', '00') };
const everything = { from: day('2000-01-01', '00'), to: day('2100-01-01', '00') };
const monthName = (d: Date) => `y${d.getUTCFullYear()}m${String(d.getUTCMonth() + 1).padStart(2, '0')}`;

describe('native backend (partitions + materialized views)', () => {
  it('has monthly partitions and an empty default', async () => {
    const sql = stores.native.sql;
    const parts = await sql<{ name: string }[]>`
      select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'analytics.card_spend'::regclass order by 1`;
    // One partition per month from the oldest row's (January 2026) to yesterday's, created by ingestion.
    const months: string[] = [];
    for (
      let m = Date.UTC(2026, 0, 1);
      m <= recent.getTime();
      m = Date.UTC(new Date(m).getUTCFullYear(), new Date(m).getUTCMonth() + 1, 1)
    ) {
      months.push(`card_spend_${monthName(new Date(m))}`);
    }
    expect(parts.map((p) => p.name)).toEqual(['card_spend_default', ...months]);
    expect(await count(sql, 'analytics.card_spend_default')).toBe(0);
  });
});

describe('timescaledb backend (hypertables, continuous aggregates, compression)', () => {
  it('keeps the series in hypertables, the aggregates continuous, and the old history compressed', async () => {
    const sql = stores.timescaledb.sql;
    const hypertables = await sql<{ name: string; compression: boolean }[]>`
      select hypertable_name as name, compression_enabled as compression from timescaledb_information.hypertables
      where hypertable_schema = 'analytics' order by 1`;
    expect(hypertables).toEqual([
      { name: 'card_spend', compression: true },
      { name: 'decisions', compression: true },
      { name: 'hold_snapshots', compression: true },
      { name: 'risk_snapshots', compression: true },
    ]);
    const aggregates = await sql<{ name: string; realtime: boolean }[]>`
      select view_name as name, not materialized_only as realtime from timescaledb_information.continuous_aggregates
      where view_schema = 'analytics' order by 1`;
    expect(aggregates).toEqual([
      { name: 'decisions_hourly', realtime: true },
      { name: 'spend_daily', realtime: true },
    ]);
    // January's and February's chunks are older than 30 days: compressed; yesterday's is not.
    const chunks = await sql<{ end: Date; compressed: boolean }[]>`
      select range_end as end, is_compressed as compressed from timescaledb_information.chunks
      where hypertable_schema = 'analytics' and hypertable_name = 'card_spend' order by range_end`;
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    for (const chunk of chunks) {
      expect(chunk.compressed).toBe(
        chunk.end.getTime() <= now.getTime() - HISTORY.compressAfterDays * DAY_MS,
      );
    }
    expect(chunks.filter((c) => c.compressed).length).toBeGreaterThanOrEqual(2);
    const [stats] = await sql<{ compressed: number; before: string; after: string }[]>`
      select number_compressed_chunks::int as compressed, before_compression_total_bytes::text as before,
        after_compression_total_bytes::text as after
      from hypertable_compression_stats('analytics.card_spend')`;
    expect(stats?.compressed).toBeGreaterThanOrEqual(2);
    expect(Number(stats?.after)).toBeGreaterThan(0);
  });

  it('replaces a policy whose setting changed and keeps it when it did not', async () => {
    const sql = stores.timescaledb.sql;
    const compressAfter = async () =>
      (
        await sql<{ after: string }[]>`
          select config->>'compress_after' as after from timescaledb_information.jobs
          where proc_name = 'policy_compression' and hypertable_name = 'card_spend'`
      ).map((j) => j.after);
    await setUpAnalytics(sql, 'timescaledb', { ...HISTORY, compressAfterDays: 20 });
    expect(await compressAfter()).toEqual(['20 days']);
    await setUpAnalytics(sql, 'timescaledb', HISTORY);
    await setUpAnalytics(sql, 'timescaledb', HISTORY);
    expect(await compressAfter()).toEqual(['30 days']);
    expect(timescaleSetupSql(HISTORY)).toContain("add_retention_policy('analytics.spend_daily'");
  });
});

describe.each(['native', 'timescaledb'] as const)('%s backend: the risk reports', (backend) => {
  const sql = () => stores[backend].sql;

  it('spend by day and merchant category', async () => {
    expect(await spendByDayAndCategory(sql(), january)).toEqual([
      { day: '2026-01-10', mcc: '5411', spend_cents: '2500', captures: '2', refunds: '1' },
      { day: '2026-01-10', mcc: '5812', spend_cents: '700', captures: '1', refunds: '0' },
      { day: '2026-01-11', mcc: '5411', spend_cents: '4000', captures: '1', refunds: '0' },
      { day: '2026-01-11', mcc: '4121', spend_cents: '900', captures: '1', refunds: '0' },
    ]);
    expect(
      await spendByDayAndCategory(sql(), {
        from: day(recentDay, '00'),
        to: new Date(now.getTime() + DAY_MS),
      }),
    ).toEqual([{ day: recentDay, mcc: '5411', spend_cents: '1234', captures: '1', refunds: '0' }]);
  });

  it('approval rate and decline reasons by hour', async () => {
    expect(await approvalRateByHour(sql(), january)).toEqual([
      { hour: '2026-01-10T10:00Z', decisions: '4', approved: '3', approval_rate: '0.7500' },
      { hour: '2026-01-10T11:00Z', decisions: '3', approved: '1', approval_rate: '0.3333' },
    ]);
    expect(await declineReasonsByHour(sql(), january)).toEqual([
      { hour: '2026-01-10T10:00Z', reason: 'insufficient_credit', declines: '1' },
      { hour: '2026-01-10T11:00Z', reason: 'blocked_mcc', declines: '1' },
      { hour: '2026-01-10T11:00Z', reason: 'insufficient_credit', declines: '1' },
    ]);
  });

  it('health factor distribution and the users closest to liquidation', async () => {
    expect(await healthFactorDistribution(sql())).toEqual([
      { health_factor: '1.0 – 1.1', users: '1', debt_cents: '247500' },
      { health_factor: '1.1 – 1.25', users: '1', debt_cents: '200000' },
      { health_factor: '2.0 – 3.0', users: '1', debt_cents: '123750' },
      // The spender's credit account owes nothing (its movements were written to the ledger only).
      { health_factor: 'no debt', users: '1', debt_cents: '0' },
    ]);
    const closest = await closestToLiquidation(sql(), 2);
    expect(closest.map((r) => [r['user_id'], r['health_factor']])).toEqual([
      [users['hf100'], '1.0000'],
      [users['hf124'], '1.2375'],
    ]);
  });

  it('holds outstanding by age', async () => {
    expect(await holdsByAge(sql())).toEqual([
      { age: '< 1 day', holds: '1', held_cents: '100' },
      { age: '1–3 days', holds: '1', held_cents: '200' },
      { age: '7–31 days', holds: '2', held_cents: '700' },
    ]);
  });

  it('copies nothing past the retention and counts nothing twice when ingestion runs again', async () => {
    // 8 card movements in the financial database; the one older than the retention is not copied.
    expect(await count(sql(), 'analytics.card_spend')).toBe(8);
    await readAsAnalytics(services.sqlFor('credana_reconciliation'), (financial) =>
      refreshAnalytics(
        { financial, analytics: sql(), backend, history: HISTORY },
        new Date(now.getTime() + 1_000),
      ),
    );
    expect(await count(sql(), 'analytics.card_spend')).toBe(8);
    expect(await count(sql(), 'analytics.decisions')).toBe(7);
    expect((await spendByDayAndCategory(sql(), january))[0]?.['spend_cents']).toBe('2500');
  });
});

describe('both backends', () => {
  it('answer every report with the same numbers, over all of history, compressed chunks included', async () => {
    for (const [name, report] of Object.entries(REPORTS)) {
      const native = await report.run(stores.native.sql, everything);
      const timescale = await report.run(stores.timescaledb.sql, everything);
      expect(native.length, name).toBeGreaterThan(0);
      expect(timescale, name).toEqual(native);
    }
  });

  // Runs last: it adds and removes history.
  it('drop history older than the retention, raw rows and aggregates alike', async () => {
    // Written straight into the stores (ingestion would skip it): a capture 900 days old.
    const old = new Date(now.getTime() - 900 * DAY_MS);
    const oldDay = {
      from: new Date(Math.floor(old.getTime() / DAY_MS) * DAY_MS),
      to: new Date(Math.floor(old.getTime() / DAY_MS) * DAY_MS + DAY_MS),
    };
    for (const backend of ['native', 'timescaledb'] as const) {
      const sql = stores[backend].sql;
      await ensurePartitions(sql, backend, 'card_spend', old.getTime(), old.getTime());
      await sql`insert into analytics.card_spend (occurred_at, transfer_id, user_id, kind, amount_cents, merchant_category_code)
        values (${old}, 999999999, ${users['none']!}, 'capture', 777, '5999')`;
      await refreshAggregates(sql, backend);
      expect(await spendByDayAndCategory(sql, oldDay), backend).toEqual([
        {
          day: oldDay.from.toISOString().slice(0, 10),
          mcc: '5999',
          spend_cents: '777',
          captures: '1',
          refunds: '0',
        },
      ]);
    }
    expect(await applyRetention(stores.native.sql, 'native', HISTORY, now)).toEqual([
      `card_spend_${monthName(old)}`,
    ]);
    await refreshAggregates(stores.native.sql, 'native');
    const ts = stores.timescaledb.sql;
    expect(await runPolicies(ts, 'policy_retention', ['card_spend', 'spend_daily'])).toBe(2);
    for (const backend of ['native', 'timescaledb'] as const) {
      const sql = stores[backend].sql;
      expect(await spendByDayAndCategory(sql, oldDay), backend).toEqual([]);
      expect(await count(sql, 'analytics.card_spend'), backend).toBe(8);
    }
    for (const [name, report] of Object.entries(REPORTS)) {
      expect(await report.run(ts, everything), name).toEqual(await report.run(stores.native.sql, everything));
    }
  });
});
