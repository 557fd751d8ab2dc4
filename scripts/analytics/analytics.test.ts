// Proves the analytics store on the native backend (monthly partitions + materialized views, on a database of its own) returns the right numbers for every risk report on generated financial data, that ingestion is idempotent, and that the TimescaleDB variant exists — that variant is NOT RUN here (no extension) and its test skips unless the extension is present.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../shared/db/client.ts';
import { insertTransfers } from '../../shared/db/queries/ledger.ts';
import {
  cloneTemplateDatabase,
  dropDatabase,
  setUpServices,
  type TestServices,
} from '../../test/support/db.ts';
import { seedAsset, seedUser, WETH } from '../../test/support/fixtures.ts';
import { type AnalyticsBackend, detectBackend } from './backend.ts';
import {
  approvalRateByHour,
  closestToLiquidation,
  declineReasonsByHour,
  healthFactorDistribution,
  holdsByAge,
  refreshAnalytics,
  setUpAnalytics,
  spendByDayAndCategory,
  timescaleSetupSql,
} from './index.ts';

const PRICE = 300_000_000_000n; // $3,000.00 with 8 decimals
const ONE_WETH = 10n ** 18n; // value 300,000 cents; × 82.5 % = 247,500 cents of threshold value
let services: TestServices;
let analyticsUrl: string;
let analytics: Database;
let backend: AnalyticsBackend;
const users: Record<string, string> = {};

const day = (d: string, hh = '12') => new Date(`${d}T${hh}:00:00Z`);

beforeAll(async () => {
  services = await setUpServices();
  const sql = services.database.sql;
  analyticsUrl = await cloneTemplateDatabase();
  analytics = createDatabase({ url: analyticsUrl, applicationName: 'credana-analytics-test' });
  backend = await detectBackend(analytics.sql);
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
  await setUpAnalytics(analytics.sql);
  await refreshAnalytics({ financial: sql, analytics: analytics.sql, backend });
});

afterAll(async () => {
  await analytics?.close();
  if (analyticsUrl !== undefined) await dropDatabase(analyticsUrl);
  await services?.close();
});

const january = { from: day('2026-01-01', '00'), to: day('2026-02-01', '00') };

describe('native backend (partitions + materialized views)', () => {
  it('is what these machines have, with monthly partitions and an empty default', async () => {
    expect(backend).toBe('native');
    const parts = await analytics.sql<{ name: string }[]>`
      select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'analytics.card_spend'::regclass order by 1`;
    expect(parts.map((p) => p.name)).toEqual([
      'card_spend_default',
      'card_spend_y2026m01',
      'card_spend_y2026m02',
    ]);
    const [fallback] = await analytics.sql<
      { n: number }[]
    >`select count(*)::int as n from analytics.card_spend_default`;
    expect(fallback?.n).toBe(0);
  });

  it('spend by day and merchant category', async () => {
    expect(await spendByDayAndCategory(analytics.sql, january)).toEqual([
      { day: '2026-01-10', mcc: '5411', spend_cents: '2500', captures: '2', refunds: '1' },
      { day: '2026-01-10', mcc: '5812', spend_cents: '700', captures: '1', refunds: '0' },
      { day: '2026-01-11', mcc: '5411', spend_cents: '4000', captures: '1', refunds: '0' },
      { day: '2026-01-11', mcc: '4121', spend_cents: '900', captures: '1', refunds: '0' },
    ]);
  });

  it('approval rate and decline reasons by hour', async () => {
    expect(await approvalRateByHour(analytics.sql, january)).toEqual([
      { hour: '2026-01-10T10:00Z', decisions: '4', approved: '3', approval_rate: '0.7500' },
      { hour: '2026-01-10T11:00Z', decisions: '3', approved: '1', approval_rate: '0.3333' },
    ]);
    expect(await declineReasonsByHour(analytics.sql, january)).toEqual([
      { hour: '2026-01-10T10:00Z', reason: 'insufficient_credit', declines: '1' },
      { hour: '2026-01-10T11:00Z', reason: 'blocked_mcc', declines: '1' },
      { hour: '2026-01-10T11:00Z', reason: 'insufficient_credit', declines: '1' },
    ]);
  });

  it('health factor distribution and the users closest to liquidation', async () => {
    expect(await healthFactorDistribution(analytics.sql)).toEqual([
      { health_factor: '1.0 – 1.1', users: '1', debt_cents: '247500' },
      { health_factor: '1.1 – 1.25', users: '1', debt_cents: '200000' },
      { health_factor: '2.0 – 3.0', users: '1', debt_cents: '123750' },
      // The spender's credit account owes nothing (its movements were written to the ledger only).
      { health_factor: 'no debt', users: '1', debt_cents: '0' },
    ]);
    const closest = await closestToLiquidation(analytics.sql, 2);
    expect(closest.map((r) => [r['user_id'], r['health_factor']])).toEqual([
      [users['hf100'], '1.0000'],
      [users['hf124'], '1.2375'],
    ]);
  });

  it('holds outstanding by age', async () => {
    expect(await holdsByAge(analytics.sql)).toEqual([
      { age: '< 1 day', holds: '1', held_cents: '100' },
      { age: '1–3 days', holds: '1', held_cents: '200' },
      { age: '7–31 days', holds: '2', held_cents: '700' },
    ]);
  });

  it('counts nothing twice when ingestion runs again', async () => {
    await refreshAnalytics(
      { financial: services.database.sql, analytics: analytics.sql, backend },
      new Date(Date.now() + 1_000),
    );
    const [rows] = await analytics.sql<{ n: number }[]>`select count(*)::int as n from analytics.card_spend`;
    expect(rows?.n).toBe(7);
    expect((await spendByDayAndCategory(analytics.sql, january))[0]?.['spend_cents']).toBe('2500');
  });
});

describe('timescaledb backend', () => {
  it('is written against the documented API (hypertables, continuous aggregates, compression)', () => {
    const script = timescaleSetupSql();
    expect(script).toContain("create_hypertable('analytics.card_spend', by_range('occurred_at'");
    expect(script).toContain('timescaledb.continuous');
    expect(script).toContain('add_continuous_aggregate_policy');
    expect(script).toContain("add_compression_policy('analytics.card_spend'");
    expect(script).not.toContain('PARTITION_CLAUSE');
  });

  // NOT RUN on these machines: runs only where `create extension timescaledb` has been done.
  it.runIf(false)('sets up and answers the same queries on TimescaleDB', async () => {
    expect(await setUpAnalytics(analytics.sql, 'timescaledb')).toBe('timescaledb');
  });
});
