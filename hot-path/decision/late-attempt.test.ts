// Proves that a Redis attempt held in a stalled connection past its request's answer, and run only after
// Stripe's own event for that request was applied, reserves nothing (chaos bug 6, docs/chaos.md): Redis
// and Postgres end where Stripe's events say. A private redis-server behind a TCP proxy that the test
// stalls, the in-process hot path on it, a lifecycle handler of a peer that reaches Redis, real Postgres.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, type Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPath, post, startHotPath, testConfig } from '../../test/support/hot-path.ts';
import { type RedisServer, startRedisServer } from '../../test/support/processes.ts';
import { drainOutbox } from '../../test/support/reconcile.ts';
import { authorizationEvent, authorizationRequest } from '../../test/support/stripe.ts';
import { startTcpProxy, type TcpProxy } from '../../test/support/tcp-proxy.ts';
import { createLifecycle, type Lifecycle } from '../lifecycle/apply.ts';
import { lifecycleEvent } from '../stripe/events.ts';

const PRICE = 300_000_000_000n;
let shared: TestServices;
let server: RedisServer;
let redis: Redis;
let proxy: TcpProxy;
/** A private single Redis, whatever TEST_REDIS says (a proxy cannot stand in front of a cluster). */
let services: TestServices;
let hotPath: HotPath;
/** A peer's lifecycle handler: it reaches Redis directly while the hot path's connection is stalled. */
let peer: Lifecycle;

beforeAll(async () => {
  shared = await setUpServices();
  server = await startRedisServer();
  redis = createRedis({ url: server.url });
  proxy = await startTcpProxy(server.port);
  services = { ...shared, redis, redisUrl: server.url, redisClusterNodes: [] };
  await seedAsset(shared.database.sql, redis, services.prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
  // The Redis attempt gives up after 150 ms; the stalled command itself is not timed out by the client
  // before the test resumes the proxy. A lease long enough that its timer sends nothing during the test.
  hotPath = await startHotPath(
    { ...services, redisUrl: proxy.url('redis') },
    {
      DECISION_BUDGET_MS: '1900',
      REDIS_DECISION_BUDGET_MS: '150',
      REDIS_COMMAND_TIMEOUT_MS: '1800',
      REDIS_DECIDER_LEASE_MS: '60000',
      VELOCITY_LIMIT_PER_MIN: '10000',
    },
  );
  peer = createLifecycle({ redis, sql: shared.database.sql, settings: testConfig(services) });
});

afterAll(async () => {
  proxy?.resume();
  await hotPath?.close();
  await proxy?.close();
  redis?.disconnect();
  await server?.destroy();
  await shared?.close();
});

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`not reached in 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Decisions this hot path made from Redis. */
async function fromRedis(): Promise<number> {
  const { values } = await hotPath.metrics.decisions.get();
  return values.filter((v) => v.labels.source === 'redis').reduce((sum, v) => sum + v.value, 0);
}

describe('a Redis attempt that runs after Stripe had its answer', () => {
  it("reserves nothing once Stripe's created for its request was applied first", async () => {
    const { userId, cardId } = await seedUser(shared.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
    });
    // Warm, until a decision came from Redis: the card's owner, the account snapshot and the lease are
    // then known, so the next decision's only Redis command is the DECIDE script itself. (A first
    // decision of a cold process may go to the fallback while the lease is acquired.)
    await until(async () => {
      const before = await fromRedis();
      const warm = await post(
        hotPath,
        '/stripe/authorizations',
        authorizationRequest({ cardId, amountCents: 0 }),
      );
      expect(warm.json.approved).toBe(true);
      return (await fromRedis()) > before;
    }, 'a decision from Redis');
    // A healthy peer decides from Redis (a live lease): this process's fallback declines, fenced, as
    // hot-path-1's lease fenced hot-path-0 in seed 17.
    await shared.database.sql`insert into redis_deciders (holder, expires_at, renewed_at)
      values ('late-attempt-peer', now() + interval '1 hour', now())`;
    try {
      proxy.stall();
      const request = authorizationRequest({ cardId, amountCents: 5_000 });
      const authorizationId = request.data.object.id;
      const answer = await post(hotPath, '/stripe/authorizations', request);
      expect(answer.json).toMatchObject({ approved: false, metadata: { reason: 'system_unavailable' } });
      // Stripe declined it and says so; the peer applies that while the DECIDE is still in the socket.
      const created = authorizationEvent({
        type: 'issuing_authorization.created',
        cardId,
        authorizationId,
        amountCents: 0,
        approved: false,
        status: 'pending',
        requestHistory: 1,
        createdS: request.created,
      });
      expect((await peer.apply(lifecycleEvent.parse(created), JSON.stringify(created))).applied).toBe(true);
      // The stall ends: the late DECIDE reaches Redis and runs.
      const keys = userKeys(services.prefix, userId);
      proxy.resume();
      await until(async () => (await redis.exists(keys.decision(request.id))) === 1, 'the late DECIDE ran');
      await drainOutbox(redis, shared.database.sql, services.prefix);
      const [account] = await shared.database.sql<{ holds_cents: string }[]>`
        select holds_cents::text from credit_accounts where user_id = ${userId}`;
      const [auth] = await shared.database.sql<{ held_cents: string }[]>`
        select held_cents::text from authorizations where id = ${authorizationId}`;
      expect({
        redisHold: await redis.hget(keys.account, 'hold'),
        redisAuthHold: await redis.hget(keys.holds, authorizationId),
        postgresHold: account?.holds_cents,
        postgresAuthHold: auth?.held_cents,
      }).toEqual({ redisHold: '0', redisAuthHold: null, postgresHold: '0', postgresAuthHold: '0' });
      expect(await conservationProblems(shared.database.sql, redis, services.prefix, [userId])).toEqual([]);
      // Recorded as the decline Stripe was told, so a replay would get that answer too.
      expect(await redis.get(keys.decision(request.id))).toMatch(/^0\|0\|system_unavailable\|/);
    } finally {
      proxy.resume();
      await shared.database.sql`delete from redis_deciders where holder = 'late-attempt-peer'`;
    }
  });
});
