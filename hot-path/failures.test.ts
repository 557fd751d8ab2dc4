// Proves fail-closed within the deadline on private servers that the test really stops: Redis
// killed → decisions come from Postgres (row-locked) within budget; Redis and Postgres down →
// `system_unavailable` within budget; Redis restarted empty → positions and holds rebuilt from Postgres.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../shared/db/client.ts';
import { ensureDatabase, migrateDatabase } from '../shared/db/migrate.ts';
import { createRedis, type Redis } from '../shared/redis/client.ts';
import { userKeys } from '../shared/redis/keys.ts';
import { asRole } from '../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { type HotPath, post, startHotPath } from '../test/support/hot-path.ts';
import {
  type PostgresCluster,
  type RedisServer,
  startPostgresCluster,
  startRedisServer,
} from '../test/support/processes.ts';
import { authorizationRequest } from '../test/support/stripe.ts';

const PRICE = 300_000_000_000n;
const BUDGET_MS = 400;
let pg: PostgresCluster;
let redisServer: RedisServer;
let redis: Redis;
let database: Database;
let hotPath: HotPath;
let databaseUrl: string;
const prefix = 'fail:';

beforeAll(async () => {
  [pg, redisServer] = await Promise.all([startPostgresCluster(), startRedisServer()]);
  const url = new URL(pg.url);
  url.pathname = '/credana';
  databaseUrl = url.toString();
  await ensureDatabase(databaseUrl);
  await migrateDatabase(databaseUrl);
  database = createDatabase({ url: databaseUrl });
  redis = createRedis({ url: redisServer.url });
  await seedAsset(database.sql, redis, prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
  hotPath = await startHotPath(
    { databaseUrl, redisUrl: redisServer.url, prefix, urlFor: (role) => asRole(databaseUrl, role) },
    {
      DECISION_BUDGET_MS: String(BUDGET_MS),
      REDIS_COMMAND_TIMEOUT_MS: '100',
      REDIS_DECISION_BUDGET_MS: '150',
    },
  );
});

afterAll(async () => {
  await hotPath?.close();
  redis?.disconnect();
  await database?.close();
  await redisServer?.destroy();
  pg?.destroy();
});

async function timedAuthorize(cardId: string, amountCents: number, authorizationId?: string) {
  const started = performance.now();
  const res = await post(
    hotPath,
    '/stripe/authorizations',
    authorizationRequest({ cardId, amountCents, ...(authorizationId ? { authorizationId } : {}) }),
  );
  return { ...res, elapsedMs: performance.now() - started };
}

describe('failure modes', () => {
  it('decides from Postgres when Redis is down, declines system_unavailable when both are, and rebuilds when Redis returns empty', async () => {
    const { userId, cardId } = await seedUser(database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, PRICE) }],
    });
    // A $0 verification first warms the card and account caches, so the timed calls below measure the
    // failure paths, not a cold start on a busy machine.
    expect((await timedAuthorize(cardId, 0)).json.approved).toBe(true);
    // Healthy: from Redis.
    const healthy = await timedAuthorize(cardId, 3_000);
    expect(healthy.json.approved).toBe(true);
    expect(await redis.hget(userKeys(prefix, userId).account, 'hold')).toBe('3000');
    // The ledger writer would have copied that hold to Postgres; do what it does for this test's user.
    await database.sql`update credit_accounts set holds_cents = 3000 where user_id = ${userId}`;

    await redisServer.kill('SIGKILL');
    const fromPostgres = await timedAuthorize(cardId, 5_000, 'iauth_fallback_1');
    expect(fromPostgres.status).toBe(200);
    expect(fromPostgres.json.approved).toBe(true);
    expect(fromPostgres.elapsedMs).toBeLessThan(BUDGET_MS);
    // Row-locked check-and-hold: what is left is 2,000, so 2,001 is refused even from Postgres.
    const tooMuch = await timedAuthorize(cardId, 2_001);
    expect(tooMuch.json).toMatchObject({ approved: false, metadata: { reason: 'insufficient_credit' } });
    const [row] = await database.sql<
      { holds_cents: string }[]
    >`select holds_cents from credit_accounts where user_id = ${userId}`;
    expect(row?.holds_cents).toBe('8000');
    const [auth] = await database.sql<{ held_cents: string; decision_source: string }[]>`
      select held_cents, decision_source from authorizations where id = 'iauth_fallback_1'`;
    expect(auth).toEqual({ held_cents: '5000', decision_source: 'postgres' });

    pg.stop();
    const neither = await timedAuthorize(cardId, 1);
    expect(neither.json).toMatchObject({ approved: false, metadata: { reason: 'system_unavailable' } });
    expect(neither.elapsedMs).toBeLessThan(BUDGET_MS);

    // Both come back; Redis is empty (it kept nothing on disk).
    pg.start();
    await redisServer.start();
    for (let i = 0; i < 100 && redis.status !== 'ready'; i++) await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 100 && (await hotPath.redis.ping().catch(() => 'down')) !== 'PONG'; i++)
      await new Promise((r) => setTimeout(r, 50));
    await seedAsset(database.sql, redis, prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
    expect(await redis.exists(userKeys(prefix, userId).account)).toBe(0);
    // The process decides from Postgres until it has caught up with Redis (its lease renewed and the
    // fallback's decisions adopted); its timer does that within a quarter lease, done here at once.
    expect(await hotPath.engine.lease.catchUp()).toBe(true);
    // The first decision rebuilds the account from Postgres, holds included: 2,000 left, so 2,001 is declined…
    const rebuilt = await timedAuthorize(cardId, 2_001);
    expect(rebuilt.json).toMatchObject({ approved: false, metadata: { reason: 'insufficient_credit' } });
    expect(await redis.hget(userKeys(prefix, userId).account, 'hold')).toBe('8000');
    expect(await redis.hget(userKeys(prefix, userId).holds, 'iauth_fallback_1')).toBe('5000');
    // …and 2,000 is approved, from Redis again.
    const again = await timedAuthorize(cardId, 2_000);
    expect(again.json).toMatchObject({ approved: true, metadata: { reason: 'approved' } });
    const metrics = await (await hotPath.internalApp.request('/metrics')).text();
    expect(metrics).toMatch(/credana_decision_fallbacks_total\{result="postgres",service="hot-path"\} [1-9]/);
    // Each fallback counted under its cause's stable code (shared/errors.ts): Redis killed, then Postgres.
    expect(metrics).toMatch(
      /credana_decision_redis_failures_total\{cause="(redis_connection|deadline)",service="hot-path"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /credana_decision_fallback_failures_total\{cause="(pg_[a-z_]+|deadline)",service="hot-path"\} [1-9]/,
    );
    expect(metrics).toMatch(/^credana_http_unhandled_errors_total\{service="hot-path"\} 0$/m);
  });

  it('mirrors a fallback decision into the cache when a slow Redis answers again, and replays it identically', async () => {
    const { userId, cardId } = await seedUser(database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, PRICE) }],
    });
    expect((await timedAuthorize(cardId, 0)).json.approved).toBe(true);
    expect((await timedAuthorize(cardId, 1_000)).json.approved).toBe(true);
    await database.sql`update credit_accounts set holds_cents = 1000 where user_id = ${userId}`;
    // Redis stalls (every client paused) longer than the command timeout, but keeps its data.
    await redis.call('CLIENT', 'PAUSE', '700', 'ALL');
    const body = authorizationRequest({ cardId, amountCents: 4_000, authorizationId: 'iauth_slow_redis_1' });
    const slow = await post(hotPath, '/stripe/authorizations', body);
    expect(slow.json).toMatchObject({ approved: true, metadata: { reason: 'approved' } });
    await new Promise((r) => setTimeout(r, 800));
    // Redis answers again: the fallback's hold is adopted, so 5,001 more is too much and 5,000 fits.
    expect((await timedAuthorize(cardId, 5_001)).json).toMatchObject({
      approved: false,
      metadata: { reason: 'insufficient_credit' },
    });
    expect(await redis.hget(userKeys(prefix, userId).account, 'hold')).toBe('5000');
    expect(await redis.hget(userKeys(prefix, userId).holds, 'iauth_slow_redis_1')).toBe('4000');
    // A replay of the fallback's event returns its first answer from the cache, holding nothing new.
    const replay = await post(hotPath, '/stripe/authorizations', body);
    expect(replay.json).toEqual(slow.json);
    expect(await redis.hget(userKeys(prefix, userId).account, 'hold')).toBe('5000');
  });

  it('never decides from Redis for a card whose fallback of this process is still in flight', async () => {
    // A process of its own, with a lease so long that no PING of its timer runs during the test: only
    // the Redis attempt's own budget sees the pause. The file's hot path gives its lease up, so it does
    // not fence this one's fallback.
    await hotPath.engine.lease.stop();
    const solo = await startHotPath(
      { databaseUrl, redisUrl: redisServer.url, prefix, urlFor: (role) => asRole(databaseUrl, role) },
      {
        DECISION_BUDGET_MS: '1900',
        REDIS_COMMAND_TIMEOUT_MS: '1000',
        REDIS_DECISION_BUDGET_MS: '150',
        REDIS_DECIDER_LEASE_MS: '60000',
      },
    );
    try {
      const { userId, cardId } = await seedUser(database.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, PRICE) }],
      });
      // The card is new to the process: A's first Redis command (the card lookup) waits in the pause,
      // so A's Redis attempt runs out of time without having reserved anything, and A falls back —
      // where it waits for the user's row, which the test holds locked.
      let unlock = () => {};
      const locked = new Promise<void>((resolve) => {
        unlock = resolve;
      });
      let rowLocked = () => {};
      const holding = new Promise<void>((resolve) => {
        rowLocked = resolve;
      });
      const lock = database.sql.begin(async (tx) => {
        await tx`select 1 from credit_accounts where user_id = ${userId} for update`;
        rowLocked();
        await locked;
      });
      await holding;
      await redis.call('CLIENT', 'PAUSE', '300', 'ALL');
      const a = post(solo, '/stripe/authorizations', authorizationRequest({ cardId, amountCents: 6_000 }));
      await new Promise((r) => setTimeout(r, 450));
      // Redis answers again and knows the card now; A's fallback is still waiting. B must not be decided
      // from Redis (which has no hold for A's grant): it waits for the fallback too.
      const b = post(solo, '/stripe/authorizations', authorizationRequest({ cardId, amountCents: 6_000 }));
      await new Promise((r) => setTimeout(r, 100));
      unlock();
      await lock;
      const answers = [await a, await b].map((r) => `${r.json.approved}:${r.json.metadata?.reason}`);
      expect(answers).toEqual(['true:approved', 'false:insufficient_credit']);
    } finally {
      await solo.close();
    }
  });
});
