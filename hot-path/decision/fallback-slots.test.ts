// Proves the hot path runs at most `fallbacksInFlightMax` Postgres fallbacks at once: with Redis counted
// as away and the fallbacks' Postgres stalled (a TCP proxy), the requests beyond the limit are declined
// `system_unavailable` at once, without Postgres, while those in flight wait; once they have settled
// their slots are free again and the next fallback decides from Postgres. Unbounded, a cold process on a
// starved machine spent its Postgres on fallbacks and never rebuilt its accounts (docs/hot-path.md
// "Fallbacks in flight"). Engine on real Redis and Postgres.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Database } from '../../shared/db/client.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import { createRedis } from '../../shared/redis/client.ts';
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
import { authorizationRequest } from '../../test/support/stripe.ts';
import type { TcpProxy } from '../../test/support/tcp-proxy.ts';
import { createDecisionEngine } from './engine.ts';
import { createRedisLease } from './redis-lease.ts';

let world: ProxiedPostgresWorld;
let services: TestServices;
let market: Market;
let proxy: TcpProxy;
let database: Database;

beforeAll(async () => {
  world = await setUpProxiedPostgresWorld('fallback-slots-test', 4);
  ({ services, market, proxy, database } = world);
});

afterAll(async () => {
  await world?.close();
});

it('declines at once, without Postgres, the fallbacks beyond the limit, and frees the slots once settled', async () => {
  const cards: string[] = [];
  for (let i = 0; i < 5; i++) {
    const { cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
    });
    cards.push(cardId);
  }
  // Redis counts as away, and stays so: the lease's own connection goes nowhere, so no catch-up ends its
  // suspicion, and every decision goes to the Postgres fallback.
  const nowhere = createRedis({ url: 'redis://127.0.0.1:1', offlineQueue: false });
  nowhere.on('error', () => {});
  const lease = createRedisLease({
    sql: services.database.sql,
    redis: nowhere,
    prefix: services.prefix,
    leaseMs: 1_000,
  });
  lease.markSuspect();
  const failures: ErrorCode[] = [];
  const engine = createDecisionEngine({
    settings: testConfig(services, { DECISION_BUDGET_MS: '1500', FALLBACK_GRANT_CENTS_MAX: '100000' }),
    redis: services.redis,
    sql: database.sql,
    market,
    lease,
    fallbacksInFlightMax: 2,
    onFallbackFailure: (cause) => failures.push(cause),
  });
  const decide = (cardId: string) => {
    const raw = authorizationRequest({ cardId, amountCents: 1_000 });
    return engine.decide(authorizationRequestEvent.parse(raw), JSON.stringify(raw), Date.now());
  };

  // Two fallbacks wait in the stalled proxy; the other three find no slot.
  proxy.stall();
  const inFlight = cards.slice(0, 2).map((cardId) => decide(cardId));
  const beyond = await Promise.all(cards.slice(2).map((cardId) => decide(cardId)));
  expect(beyond.map((o) => `${o.approved}:${o.reason}:${o.source}`)).toEqual([
    'false:system_unavailable:none',
    'false:system_unavailable:none',
    'false:system_unavailable:none',
  ]);
  expect(failures).toEqual(['fallback_saturated', 'fallback_saturated', 'fallback_saturated']);

  // The two in flight end (their deadline, or Postgres once resumed); then a slot is free again.
  proxy.resume();
  await Promise.all(inFlight);
  const end = Date.now() + 15_000;
  let next = await decide(cards[4]!);
  while (next.source !== 'postgres' && Date.now() < end) {
    // A fallback still settling past its answer holds its slot until it has (its connection is busy).
    await new Promise((resolve) => setTimeout(resolve, 50));
    next = await decide(cards[4]!);
  }
  expect(next).toMatchObject({ approved: true, source: 'postgres' });
  await lease.stop();
  nowhere.disconnect();
});
