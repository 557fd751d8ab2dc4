// Proves the scheduled upkeep keeps the database in shape over four months of simulated time: the local scheduler (the production SCHEDULES' upkeep and holds jobs, run as the credana_reconciliation role) is driven on a simulated clock while the real hot path and ledger writer's apply book a card event every simulated day; partitions always exist ahead and the default partition stays empty, user_position_summary always matches the live numbers within its 10-minute schedule, and holds past their expiry are swept — including a hold only Redis knows (its writer lagging), which only the hold-sweep can reach — while a 31-day lodging hold is kept until its time.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createReconcileServices, type ReconcileServices, runJob } from '../reconciler/index.ts';
import { createLocalScheduler } from '../reconciler/local-scheduler.ts';
import { SCHEDULES } from '../reconciler/qstash-schedules.ts';
import { upkeepLimits } from '../reconciler/upkeep/limits.ts';
import { addMonths, monthStartUtc } from '../shared/db/partitions.ts';
import { shardOf, userKeys } from '../shared/redis/keys.ts';
import type { TestServices } from './support/db.ts';
import { seedUser, WETH, wethForBorrowPower } from './support/fixtures.ts';
import {
  type HotPath,
  post,
  setUpServicesWithWeth,
  startHotPath,
  testConfig,
  WETH_PRICE_E8,
} from './support/hot-path.ts';
import { drainOutbox } from './support/reconcile.ts';
import { authorizationRequest, newUserId, transactionEvent } from './support/stripe.ts';

const DAY_MS = 86_400_000;
const SIMULATED_DAYS = 123; // four months and a bit, from today
const UPKEEP_JOBS = new Set(['partitions', 'summary', 'hold-sweep', 'holds']);
const SUMMARY_PERIOD_MS = (SCHEDULES.find((s) => s.job === 'summary')?.devIntervalS ?? 0) * 1000;
const SWEEP_PERIOD_MS = (SCHEDULES.find((s) => s.job === 'hold-sweep')?.devIntervalS ?? 0) * 1000;

let services: TestServices;
let hotPath: HotPath;
let upkeep: ReconcileServices;
let simNow = Date.now();
const t0 = simNow;

/** Two users on different outbox shards: A's stream is drained every day, B's writer "lags" all along. */
async function twoUsersOnDifferentShards() {
  const a = newUserId();
  let b = newUserId();
  while (shardOf(b) === shardOf(a)) b = newUserId();
  const collateral = [{ assetId: WETH.assetId, amountBase: wethForBorrowPower(1_000_000n, WETH_PRICE_E8) }];
  return {
    a: await seedUser(services.database.sql, { userId: a, collateral }),
    b: await seedUser(services.database.sql, { userId: b, collateral }),
  };
}

async function summaryMatchesLive(): Promise<boolean> {
  const [row] = await services.database.sql<{ differences: number }[]>`
    with live as (
      select u.id as user_id, coalesce(ca.holds_cents, 0) as holds_cents, coalesce(ca.unsettled_cents, 0) as unsettled_cents,
        (select count(*) from authorizations a where a.user_id = u.id and a.held_cents > 0) as open_authorizations
      from users u left join credit_accounts ca on ca.user_id = u.id),
    view as (select user_id, holds_cents, unsettled_cents, open_authorizations from user_position_summary)
    select (select count(*) from (select * from live except select * from view) x)::int
      + (select count(*) from (select * from view except select * from live) y)::int as differences`;
  return row?.differences === 0;
}

beforeAll(async () => {
  services = await setUpServicesWithWeth();
  hotPath = await startHotPath(services, { LOG_LEVEL: 'error' });
  // Upkeep runs as its own least-privilege role, as it would in production.
  upkeep = createReconcileServices(
    testConfig(services, { LOG_LEVEL: 'silent' }, 'credana_reconciliation'),
    undefined,
    { now: () => simNow },
  );
});

afterAll(async () => {
  await upkeep?.close();
  await hotPath?.close();
  await services?.close();
});

describe('four months of scheduled upkeep on a simulated clock', () => {
  it('keeps partitions ahead, the default partition empty, the summary fresh and expired holds swept', async () => {
    const sql = services.database.sql;
    const { a, b } = await twoUsersOnDifferentShards();
    const skipShards = [shardOf(b.userId)];
    // A 7-day hold (A, written to Postgres), a 31-day lodging hold (A), and a 7-day hold only Redis knows (B).
    const holds = [
      { user: a, id: 'iauth_1UpkeepWeek', mcc: '5411', days: 7 },
      { user: a, id: 'iauth_1UpkeepHotel', mcc: '7011', days: 31 },
      { user: b, id: 'iauth_1UpkeepRedisOnly', mcc: '5411', days: 7 },
    ];
    for (const h of holds) {
      const res = await post(
        hotPath,
        '/stripe/authorizations',
        authorizationRequest({
          cardId: h.user.cardId,
          amountCents: 1_000,
          authorizationId: h.id,
          mcc: h.mcc,
        }),
      );
      expect(res.json.approved, h.id).toBe(true);
    }
    await drainOutbox(services.redis, sql, services.prefix, { skipShards });
    expect((await sql`select id from authorizations where id = 'iauth_1UpkeepRedisOnly'`).length).toBe(0);

    const scheduler = createLocalScheduler({
      schedules: SCHEDULES.filter((s) => UPKEEP_JOBS.has(s.job)),
      run: async (job) => {
        const result = await runJob(job, upkeep);
        if (result.status === 'failed') throw new Error(`${job} failed: ${JSON.stringify(result.findings)}`);
        if (job === 'summary') lastSummaryMs = simNow;
        return result;
      },
      now: () => simNow,
    });
    let lastSummaryMs = Number.NEGATIVE_INFINITY;
    const ran = new Map<string, number>();
    const heldInRedis = async (userId: string, id: string) =>
      (await services.redis.hget(userKeys(services.prefix, userId).holds, id)) !== null;

    for (let day = 0; day < SIMULATED_DAYS; day++) {
      // Every tenth day, the first hour in 5-minute steps (jobs run only when due), then the rest at once.
      const steps =
        day % 10 === 0 ? [...Array.from({ length: 12 }, () => 5 * 60_000), DAY_MS - 3_600_000] : [DAY_MS];
      for (const stepMs of steps) {
        for (const job of await scheduler.runDue()) ran.set(job, (ran.get(job) ?? 0) + 1);
        // Fresh within its schedule: refreshed less than one period ago, and equal to the live numbers
        // (every change of this simulation happens before the step's runs).
        expect(simNow - lastSummaryMs, `day ${day}`).toBeLessThan(SUMMARY_PERIOD_MS);
        expect(await summaryMatchesLive(), `summary on day ${day}`).toBe(true);
        // Swept within its schedule: nothing in either user's cache is past expiry + grace + one period.
        const overdueMs = simNow - upkeepLimits.sweepGraceS * 1000 - SWEEP_PERIOD_MS;
        for (const user of [a, b]) {
          expect(
            await services.redis.zcount(
              userKeys(services.prefix, user.userId).holdExpiries,
              '-inf',
              overdueMs,
            ),
          ).toBe(0);
        }
        simNow += stepMs;
      }
      // Today's card event (a small force capture on A), created at the simulated instant; what the
      // writer books must land in a monthly partition, never in the default one.
      const event = transactionEvent({
        cardId: a.cardId,
        type: 'capture',
        amountCents: 100,
        authorizationId: null,
        createdS: Math.floor(simNow / 1000),
        transactionId: `ipi_1UpkeepDay${day}`,
      });
      expect((await post(hotPath, '/stripe/events', event)).status).toBe(200);
      await drainOutbox(services.redis, sql, services.prefix, { skipShards });
      if (day === 10) {
        // Past 7 days: the week holds are gone from Redis (B's only by the sweep), the hotel hold is kept.
        expect(await heldInRedis(a.userId, 'iauth_1UpkeepWeek')).toBe(false);
        expect(await heldInRedis(b.userId, 'iauth_1UpkeepRedisOnly')).toBe(false);
        expect(await heldInRedis(a.userId, 'iauth_1UpkeepHotel')).toBe(true);
      }
      if (day === 40) expect(await heldInRedis(a.userId, 'iauth_1UpkeepHotel')).toBe(false);
    }

    // Partitions exist ahead of the simulated now, and nothing ever fell into the default partition.
    const coveredUntil = addMonths(monthStartUtc(new Date(simNow)), upkeepLimits.partitionMonthsAhead + 1);
    const [partition] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_class where relname = ${`card_events_y${coveredUntil.slice(0, 4)}m${addMonths(coveredUntil, -1).slice(5, 7)}`}`;
    expect(partition?.n).toBe(1);
    const [placement] = await sql<{ in_default: number; in_months: number }[]>`
      select count(*) filter (where tableoid = 'card_events_default'::regclass)::int as in_default,
        count(*) filter (where tableoid <> 'card_events_default'::regclass and id like 'evt_%')::int as in_months
      from card_events where object_id like 'ipi_1UpkeepDay%'`;
    expect(placement).toEqual({ in_default: 0, in_months: SIMULATED_DAYS });
    const metrics = await upkeep.metrics.registry.getMetricsAsJSON();
    const gauge = (name: string) => metrics.find((m) => m.name === name)?.values[0]?.value;
    expect(gauge('credana_card_events_default_rows')).toBe(0);
    expect(gauge('credana_card_events_partitions_covered_until_seconds')).toBe(
      Date.parse(`${coveredUntil}T00:00:00Z`) / 1000,
    );
    expect(gauge('credana_user_position_summary_refreshed_seconds')).toBe(lastSummaryMs / 1000);

    // Once B's writer catches up, Postgres agrees: every hold released, nothing held.
    await drainOutbox(services.redis, sql, services.prefix);
    const rows = await sql<{ id: string; held_cents: string }[]>`
      select id, held_cents::text from authorizations where id like 'iauth_1Upkeep%' order by id`;
    expect(rows).toEqual([
      { id: 'iauth_1UpkeepHotel', held_cents: '0' },
      { id: 'iauth_1UpkeepRedisOnly', held_cents: '0' },
      { id: 'iauth_1UpkeepWeek', held_cents: '0' },
    ]);
    // Every job ran, and the cheap ones more often than once a day.
    expect(ran.get('partitions')).toBeGreaterThanOrEqual(SIMULATED_DAYS);
    expect(ran.get('summary')).toBeGreaterThan(SIMULATED_DAYS);
    expect(ran.get('hold-sweep')).toBeGreaterThan(SIMULATED_DAYS);
    expect(t0).toBeLessThan(simNow);
  }, 600_000);
});
