// Proves the outbox's durability promise with real processes: on a Redis with AOF `appendfsync always`,
// every decision the hot path acknowledged (answered) survives `kill -9` of Redis — hold and outbox
// record — and a ledger writer started afterwards brings Postgres to exactly the same holds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboxBacklog } from '../../ledger-writer/testing.ts';
import { createRedis, type Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPath, post, startHotPath, testConfig } from '../../test/support/hot-path.ts';
import { type RedisServer, spawnService, startRedisServer } from '../../test/support/processes.ts';
import { authorizationRequest, TEST_WEBHOOK_SECRET } from '../../test/support/stripe.ts';

const PRICE = 300_000_000_000n;
let shared: TestServices;
let aof: RedisServer;
let redis: Redis;
let services: TestServices;

beforeAll(async () => {
  shared = await setUpServices();
  aof = await startRedisServer(['--appendonly', 'yes', '--appendfsync', 'always']);
  redis = createRedis({ url: aof.url });
  services = { ...shared, redis, redisUrl: aof.url, redisClusterNodes: [] };
  await seedAsset(services.database.sql, redis, services.prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
});

afterAll(async () => {
  redis?.disconnect();
  await aof?.destroy();
  await shared?.close();
});

describe('outbox durability with AOF', () => {
  it('keeps every acknowledged decision across kill -9 of Redis, and the writer then matches it in Postgres', async () => {
    const { userId, cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(1_000_000n, PRICE) }],
    });
    let hotPath: HotPath | null = await startHotPath(services, { VELOCITY_LIMIT_PER_MIN: '10000' });
    let acknowledgedCents = 0;
    for (let i = 0; i < 40; i++) {
      const res = await post(
        hotPath,
        '/stripe/authorizations',
        authorizationRequest({ cardId, amountCents: 100 + i }),
      );
      if (res.json.approved === true) acknowledgedCents += 100 + i;
    }
    await hotPath.close();
    hotPath = null;
    expect(acknowledgedCents).toBe(40 * 100 + (39 * 40) / 2);
    await aof.kill('SIGKILL');
    await aof.start();
    for (let i = 0; i < 100 && redis.status !== 'ready'; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await redis.hget(userKeys(services.prefix, userId).account, 'hold')).toBe(
      String(acknowledgedCents),
    );
    expect(await outboxBacklog(redis, services.prefix)).toBe(40);
    // A real writer process drains the restored outbox into Postgres.
    const config = testConfig(services, {}, 'credana_ledger_writer');
    const writer = await spawnService(
      'ledger-writer/main.ts',
      {
        NODE_ENV: 'test',
        LOG_LEVEL: 'silent',
        DATABASE_URL: config.DATABASE_URL,
        REDIS_URL: aof.url,
        REDIS_KEY_PREFIX: services.prefix,
        STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
        LEDGER_WRITER_PORT: '0',
      },
      'ledger-writer ready',
    );
    try {
      for (let i = 0; i < 200; i++) {
        const [row] = await services.database.sql<{ holds_cents: string }[]>`
          select holds_cents from credit_accounts where user_id = ${userId}`;
        if (row?.holds_cents === String(acknowledgedCents)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(await conservationProblems(services.database.sql, redis, services.prefix, [userId])).toEqual([]);
      const [decisions] = await services.database.sql<
        { n: number }[]
      >`select count(*)::int as n from decisions where user_id = ${userId}`;
      expect(decisions?.n).toBe(40);
    } finally {
      await writer.kill('SIGTERM');
    }
  });
});
