// Proves that a decision's budget is measured on the monotonic clock (docs/chaos.md bug 13): when the
// machine's wall clock is stepped back (NTP) while a Postgres fallback is still running after its answer
// went out (`system_unavailable`, Stripe declines), the fallback still refuses to commit — no grant, no
// decision Stripe was not told. The engine on real Redis and Postgres; the fallback's connection goes
// through a TCP proxy that the test stalls until the answer is out and the clock has stepped.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Database } from '../../shared/db/client.ts';
import type { Market } from '../../shared/redis/market.ts';
import { authorizationRequestEvent } from '../../shared/stripe/events.ts';
import type { TestServices } from '../../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import {
  type ProxiedPostgresWorld,
  setUpProxiedPostgresWorld,
  testConfig,
  WETH_PRICE_E8,
} from '../../test/support/hot-path.ts';
import { drainOutbox } from '../../test/support/reconcile.ts';
import { authorizationRequest } from '../../test/support/stripe.ts';
import type { TcpProxy } from '../../test/support/tcp-proxy.ts';
import { createDecisionEngine } from './engine.ts';
import { createRedisLease } from './redis-lease.ts';

const APPLICATION = 'clock-step-test';
let world: ProxiedPostgresWorld;
let services: TestServices;
let market: Market;
let proxy: TcpProxy;
let database: Database;

beforeAll(async () => {
  world = await setUpProxiedPostgresWorld(APPLICATION, 1);
  ({ services, market, proxy, database } = world);
});

afterAll(async () => {
  await world?.close();
});

it('a fallback past its answer does not commit when the wall clock steps back meanwhile', async () => {
  const { cardId } = await seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
  });
  const settings = testConfig(services, { DECISION_BUDGET_MS: '400', FALLBACK_GRANT_CENTS_MAX: '100000' });
  // The machine's wall clock: the test steps it back by a minute, as NTP may.
  let offsetMs = 0;
  const now = () => Date.now() + offsetMs;
  const lease = createRedisLease({
    sql: services.database.sql,
    redis: services.redis,
    prefix: services.prefix,
    leaseMs: 1_000,
  });
  // Redis counts as away: the decision goes to the Postgres fallback at once.
  lease.markSuspect();
  const engine = createDecisionEngine({
    settings,
    redis: services.redis,
    sql: database.sql,
    market,
    lease,
    now,
  });
  const raw = authorizationRequest({ cardId, amountCents: 5_000 });
  const event = authorizationRequestEvent.parse(raw);

  // The fallback's statements wait in the stalled proxy; the answer goes out at the deadline.
  proxy.stall();
  const outcome = await engine.decide(event, JSON.stringify(raw), now());
  expect(outcome).toMatchObject({ approved: false, reason: 'system_unavailable' });

  // Then the wall clock steps back and the fallback's transaction goes on to its end.
  offsetMs = -60_000;
  const [clock] = await services.database.sql<{ resumedAt: Date }[]>`select clock_timestamp() as "resumedAt"`;
  const resumedAt = clock!.resumedAt;
  proxy.resume();
  const end = Date.now() + 15_000;
  for (;;) {
    const [row] = await services.database.sql<{ done: boolean }[]>`
      select count(*) > 0 as done from pg_stat_activity
      where application_name = ${APPLICATION} and state = 'idle' and state_change > ${resumedAt}
        and (query ilike 'commit%' or query ilike 'rollback%')`;
    if (row?.done === true) break;
    if (Date.now() > end) throw new Error('the fallback transaction did not end in 15 s');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }

  // Stripe was told `system_unavailable`: nothing of this request may be in Postgres.
  const decisions = await services.database.sql<{ reason: string }[]>`
    select reason from decisions where event_id = ${event.id}`;
  expect(decisions).toEqual([]);
  const holds = await services.database.sql<{ amount: string }[]>`
    select held_cents::text as amount from authorizations where id = ${event.data.object.id}`;
  expect(holds).toEqual([]);
});

it("a Redis decision's record, timed on the request's clock, is written by the ledger writer", async () => {
  const { cardId } = await seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
  });
  const engine = createDecisionEngine({
    settings: testConfig(services),
    redis: services.redis,
    sql: services.database.sql,
    market,
  });
  const raw = authorizationRequest({ cardId, amountCents: 5_000 });
  const event = authorizationRequestEvent.parse(raw);
  // Until a decision comes from Redis (a cold engine's first may go to the fallback while its lease is
  // acquired); each is for a request of its own.
  let outcome = await engine.decide(event, JSON.stringify(raw), Date.now());
  for (let i = 0; outcome.source !== 'redis' && i < 20; i++) {
    const again = authorizationRequest({ cardId, amountCents: 5_000 });
    outcome = await engine.decide(authorizationRequestEvent.parse(again), JSON.stringify(again), Date.now());
  }
  expect(outcome).toMatchObject({ approved: true, source: 'redis' });
  // Its hold expiry and decision time are whole milliseconds: the writer takes the record (a fraction
  // of a millisecond is an invalid record, dead-lettered).
  await drainOutbox(services.redis, services.database.sql, services.prefix);
  const [row] = await services.database.sql<{ n: number }[]>`
    select count(*)::int as n from decisions where id = ${outcome.decisionId}`;
  expect(row?.n).toBe(1);
});
