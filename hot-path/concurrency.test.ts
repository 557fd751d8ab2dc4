// Proves no over-credit under concurrency: 200 simultaneous authorizations for one user whose credit
// covers exactly 50, over real sockets from several connections, first to one server and then to two
// hot-path processes sharing one Redis; and counts Redis round trips per decision
// with MONITOR on a private redis-server so other test files cannot disturb the count.
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureAccount, writeChainState } from '../shared/redis/account.ts';
import { createRedis, type SingleRedis } from '../shared/redis/client.ts';
import { userKeys } from '../shared/redis/keys.ts';
import { authorizationRequestEvent as authorizationRequestEventSchema } from '../shared/stripe/events.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { startHotPath, testConfig } from '../test/support/hot-path.ts';
import { freePort, type RedisServer, spawnService, startRedisServer } from '../test/support/processes.ts';
import { authorizationRequest, sign, TEST_WEBHOOK_SECRET } from '../test/support/stripe.ts';

const PRICE = 300_000_000_000n;
const RELAXED = {
  VELOCITY_LIMIT_PER_MIN: '10000',
  DECISION_BUDGET_MS: '1900',
  REDIS_COMMAND_TIMEOUT_MS: '1500',
  REDIS_DECISION_BUDGET_MS: '1500',
};
const AMOUNT = 1_000;
let shared: TestServices;
let privateRedis: RedisServer;
let redis: SingleRedis;
let services: TestServices;

beforeAll(async () => {
  shared = await setUpServices();
  privateRedis = await startRedisServer();
  redis = createRedis({ url: privateRedis.url });
  services = { ...shared, redis, redisUrl: privateRedis.url, redisClusterNodes: [] };
  await seedAsset(services.database.sql, redis, services.prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
});

afterAll(async () => {
  redis?.disconnect();
  await privateRedis?.destroy();
  await shared?.close();
});

async function fire(urls: string[], cardId: string, count: number) {
  const requests = Array.from({ length: count }, (_, i) => {
    const raw = JSON.stringify(authorizationRequest({ cardId, amountCents: AMOUNT }));
    return fetch(`${urls[i % urls.length]}/stripe/authorizations`, {
      method: 'POST',
      body: raw,
      headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
    }).then(async (res) => (await res.json()) as { approved: boolean; metadata: { reason: string } });
  });
  return Promise.all(requests);
}

async function userCovering(n: number) {
  return seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(BigInt(n * AMOUNT), PRICE) }],
    creditLimitCents: 10_000_000n,
  });
}

describe('concurrent authorizations for one user', () => {
  it('approves exactly 50 of 200 simultaneous requests from one server, holds equal 50 × amount', async () => {
    // Atomicity, not latency, is under test: a generous budget keeps a busy CI machine from turning
    // slow answers into fallbacks.
    const hotPath = await startHotPath(services, RELAXED);
    const port = await freePort();
    const server = serve({ fetch: hotPath.app.fetch, port, hostname: '127.0.0.1' });
    try {
      const { userId, cardId } = await userCovering(50);
      const answers = await fire([`http://127.0.0.1:${port}`], cardId, 200);
      const reasons: Record<string, number> = {};
      for (const a of answers) reasons[a.metadata.reason] = (reasons[a.metadata.reason] ?? 0) + 1;
      expect(reasons).toEqual({ approved: 50, insufficient_credit: 150 });
      expect(await redis.hget(userKeys(services.prefix, userId).account, 'hold')).toBe(String(50 * AMOUNT));
    } finally {
      server.close();
      await hotPath.close();
    }
  });

  it('approves exactly 50 of 200 when two hot-path processes share one Redis', async () => {
    const ports = [await freePort(), await freePort()];
    const config = testConfig(services);
    const env = (port: number) => ({
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: config.DATABASE_URL,
      REDIS_URL: privateRedis.url,
      REDIS_KEY_PREFIX: services.prefix,
      STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
      ...RELAXED,
      HOT_PATH_PORT: String(port),
    });
    const processes = await Promise.all(
      ports.map((port) => spawnService('hot-path/main.ts', env(port), 'hot-path ready')),
    );
    try {
      // One $0 verification per process first warms its card and account caches, so the
      // burst measures atomicity rather than a cold start on a busy machine.
      const { userId, cardId } = await userCovering(50);
      for (const p of ports) {
        const raw = JSON.stringify(authorizationRequest({ cardId, amountCents: 0 }));
        const res = await fetch(`http://127.0.0.1:${p}/stripe/authorizations`, {
          method: 'POST',
          body: raw,
          headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
        });
        expect(((await res.json()) as { approved: boolean }).approved).toBe(true);
      }
      const answers = await fire(
        ports.map((p) => `http://127.0.0.1:${p}`),
        cardId,
        200,
      );
      const reasons: Record<string, number> = {};
      for (const a of answers) reasons[a.metadata.reason] = (reasons[a.metadata.reason] ?? 0) + 1;
      expect(reasons).toEqual({ approved: 50, insufficient_credit: 150 });
      expect(await redis.hget(userKeys(services.prefix, userId).account, 'hold')).toBe(String(50 * AMOUNT));
    } finally {
      await Promise.all(processes.map((p) => p.kill('SIGTERM')));
    }
  });
});

describe('Redis round trips per decision', () => {
  /** Commands clients send while `work` runs (MONITOR marks the ones a script runs as 'lua'). */
  async function commandsSent(work: () => Promise<void>): Promise<string[]> {
    const monitor = await redis.monitor();
    const sent: string[] = [];
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      if (!source.includes('lua')) sent.push(String(args[0]).toLowerCase());
    });
    await work();
    await new Promise((resolve) => setTimeout(resolve, 200));
    monitor.disconnect();
    return sent;
  }

  it('makes one round trip per decision once the card and the account snapshot are known', async () => {
    const hotPath = await startHotPath(services, RELAXED);
    try {
      const { cardId } = await userCovering(100);
      // First decision warms the card index and the account (rebuilt from Postgres, then read).
      const warm = await hotPath.engine.decide(
        parse(authorizationRequest({ cardId, amountCents: AMOUNT })),
        '{}',
        Date.now(),
      );
      expect(warm.approved).toBe(true);
      const n = 20;
      let reported = 0;
      const sent = await commandsSent(async () => {
        for (let i = 0; i < n; i++) {
          const outcome = await hotPath.engine.decide(
            parse(authorizationRequest({ cardId, amountCents: AMOUNT })),
            '{}',
            Date.now(),
          );
          expect(outcome.approved).toBe(true);
          reported += outcome.redisRoundTrips;
        }
      });
      expect(sent).toEqual(Array.from({ length: n }, () => 'evalsha'));
      expect(reported / n).toBe(1);
    } finally {
      await hotPath.close();
    }
  });

  it('never decides from a stale snapshot: a collateral change or a rebuilt account is read again', async () => {
    const hotPath = await startHotPath(services, RELAXED);
    try {
      const { userId, cardId } = await userCovering(3);
      const decide = () =>
        hotPath.engine.decide(parse(authorizationRequest({ cardId, amountCents: AMOUNT })), '{}', Date.now());
      expect((await decide()).approved).toBe(true);
      // The collateral drops to cover nothing more: the indexer's write-through bumps the version.
      await writeChainState(redis, services.prefix, userId, {
        collateral: new Map([['WETH', { amountBase: 0n, pendingWithdrawalBase: 0n }]]),
        debtOnchainUsdc: 0n,
      });
      let declined: Awaited<ReturnType<typeof decide>> | undefined;
      const afterChange = await commandsSent(async () => {
        declined = await decide();
      });
      expect(declined?.approved).toBe(false);
      expect(declined?.reason).toBe('insufficient_credit');
      // Refused as stale, read again, decided: three round trips, then one again.
      expect(afterChange).toEqual(['evalsha', 'hgetall', 'evalsha']);
      expect(declined?.redisRoundTrips).toBe(3);
    } finally {
      await hotPath.close();
    }
  });

  it('does not reuse a snapshot across a rebuilt account, even when nothing else bumped the version', async () => {
    const hotPath = await startHotPath(services, RELAXED);
    try {
      const { userId, cardId } = await userCovering(3);
      const decide = () =>
        hotPath.engine.decide(parse(authorizationRequest({ cardId, amountCents: AMOUNT })), '{}', Date.now());
      expect((await decide()).approved).toBe(true); // snapshot taken at the account's first version
      // Redis loses the account while the collateral is withdrawn (Postgres is the system of record);
      // the rebuilt account must not carry the version the old snapshot has.
      await services.database.sql`update positions set collateral_base = 0 where user_id = ${userId}`;
      await redis.del(userKeys(services.prefix, userId).account);
      // Rebuilt by someone else (another hot-path process, `npm run cache:warm`) before this process's
      // next decision, so the script finds an account and compares versions.
      expect(await ensureAccount(redis, services.database.sql, services.prefix, userId, Date.now())).toBe(
        true,
      );
      const after = await decide();
      expect(after.approved).toBe(false);
      expect(after.reason).toBe('insufficient_credit');
    } finally {
      await hotPath.close();
    }
  });
});

function parse(body: ReturnType<typeof authorizationRequest>) {
  // The engine takes the validated event; reuse the route's schema so the shape is real.
  return authorizationRequestEventSchema.parse(body);
}
