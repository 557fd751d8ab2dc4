// Proves the recovery from losing Redis (docs/operations.md, "Losing Redis"), on a private redis-server
// (AOF, appendfsync always) that the test really kills, under the real hot path and a real ledger-writer
// process: (a) kill -9 and restart: holds and unwritten outbox entries come back from the AOF and the
// writer drains them; (b) restart with the data gone: `npm run cache:warm` rebuilds the market and the
// accounts from Postgres (holds the writer had written come back), replaying Stripe's
// issuing_authorization.created brings back the approvals the lost outbox held, and a writer that ran
// through the loss keeps draining; after each, the conservation check passes.
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboxBacklog } from '../ledger-writer/testing.ts';
import { createRedis, type Redis } from '../shared/redis/client.ts';
import { allOutboxKeys, userKeys } from '../shared/redis/keys.ts';
import { conservationProblems } from './support/conservation.ts';
import { type ServiceRole, setUpServices, type TestServices } from './support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from './support/fixtures.ts';
import { type HotPath, post, startHotPath } from './support/hot-path.ts';
import {
  type RedisServer,
  runScript,
  type ServiceProcess,
  spawnService,
  startRedisServer,
} from './support/processes.ts';
import { authorizationEvent, authorizationRequest, TEST_WEBHOOK_SECRET } from './support/stripe.ts';

const PRICE = 300_000_000_000n;
let shared: TestServices;
let server: RedisServer;
let redis: Redis;
let services: TestServices;
let hotPath: HotPath | null = null;

beforeAll(async () => {
  shared = await setUpServices();
  server = await startRedisServer(['--appendonly', 'yes', '--appendfsync', 'always']);
  redis = createRedis({ url: server.url });
  services = { ...shared, redis, redisUrl: server.url, redisClusterNodes: [] };
  await seedAsset(services.database.sql, redis, services.prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
}, 60_000);

afterAll(async () => {
  await hotPath?.close();
  redis?.disconnect();
  await server?.destroy();
  await shared?.close();
});

const serviceEnv = (role: ServiceRole = 'credana_ledger_writer') => ({
  NODE_ENV: 'test',
  LOG_LEVEL: 'warn',
  DATABASE_URL: services.urlFor(role),
  REDIS_URL: server.url,
  REDIS_KEY_PREFIX: services.prefix,
  STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
  LEDGER_WRITER_PORT: '0',
});

const startWriter = () => spawnService('ledger-writer/main.ts', serviceEnv(), 'ledger-writer ready');

async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function redisReady(): Promise<void> {
  await waitUntil(
    async () => redis.status === 'ready' && (await redis.ping().catch(() => '')) === 'PONG',
    'Redis',
  );
}

const pgHolds = async (userId: string) => {
  const [row] = await services.database.sql<{ holds_cents: string }[]>`
    select holds_cents::text from credit_accounts where user_id = ${userId}`;
  return BigInt(row?.holds_cents ?? '-1');
};
const redisHolds = async (userId: string) =>
  BigInt((await redis.hget(userKeys(services.prefix, userId).account, 'hold')) ?? '-1');
const decisionsOf = async (userId: string) => {
  const [row] = await services.database.sql<{ n: number }[]>`
    select count(*)::int as n from decisions where user_id = ${userId}`;
  return row?.n ?? -1;
};

interface Approval {
  authorizationId: string;
  cents: number;
  createdS: number;
}

async function approve(cardId: string, cents: number): Promise<Approval> {
  if (hotPath === null) throw new Error('no hot path');
  const authorizationId = `iauth_loss_${Math.random().toString(36).slice(2, 12)}`;
  const createdS = Math.floor(Date.now() / 1000);
  const res = await post(
    hotPath,
    '/stripe/authorizations',
    authorizationRequest({ cardId, amountCents: cents, authorizationId, createdS }),
  );
  expect(res.json.approved, JSON.stringify(res.json)).toBe(true);
  return { authorizationId, cents, createdS };
}

/** Entries delivered to the writer's consumer group and not acked yet, over every shard stream. */
async function pendingCount(): Promise<number> {
  let n = 0;
  for (const stream of allOutboxKeys(services.prefix)) {
    const summary = (await redis.xpending(stream, 'ledger-writer').catch(() => [0])) as unknown[];
    n += Number(summary[0] ?? 0);
  }
  return n;
}

const total = (list: readonly Approval[]) => list.reduce((sum, a) => sum + BigInt(a.cents), 0n);

/** Stripe's `issuing_authorization.created` for an approval, as Stripe (re)sends it: same event id. */
function createdEvent(cardId: string, a: Approval) {
  return authorizationEvent({
    type: 'issuing_authorization.created',
    eventId: `evt_created_${a.authorizationId}`,
    cardId,
    authorizationId: a.authorizationId,
    amountCents: a.cents,
    approved: true,
    status: 'pending',
    requestHistory: 1,
    createdS: a.createdS,
  });
}

async function newUser(dollars: bigint) {
  return seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(dollars * 100n, PRICE) }],
  });
}

describe('losing Redis', () => {
  it('(a) AOF on, kill -9 and restart: holds and unwritten outbox entries come back and are written', async () => {
    hotPath = await startHotPath(services, { VELOCITY_LIMIT_PER_MIN: '10000' });
    const { userId, cardId } = await newUser(10_000n);
    let writer: ServiceProcess | null = await startWriter();
    const written: Approval[] = [];
    for (let i = 0; i < 5; i++) written.push(await approve(cardId, 1_000 + i));
    await waitUntil(async () => (await pgHolds(userId)) === total(written), 'the writer to write');
    // Written and acknowledged (the ack follows the commit): the outbox holds nothing of them.
    await waitUntil(async () => (await outboxBacklog(redis, services.prefix)) === 0, 'the writer to ack');
    // The writer dies (lag): the next approvals exist only in Redis, hold and outbox entry.
    await writer.kill('SIGKILL');
    const unwritten: Approval[] = [];
    for (let i = 0; i < 5; i++) unwritten.push(await approve(cardId, 2_000 + i));
    expect(await outboxBacklog(redis, services.prefix)).toBe(5);

    await server.kill('SIGKILL');
    await server.start();
    await redisReady();
    expect(await redisHolds(userId)).toBe(total(written) + total(unwritten));
    expect(await outboxBacklog(redis, services.prefix)).toBe(5);
    // The running hot path reconnects and decides from Redis again.
    const after = await approve(cardId, 3_000);

    writer = await startWriter();
    try {
      const all = [...written, ...unwritten, after];
      await waitUntil(
        async () => (await pgHolds(userId)) === total(all),
        'the restored outbox to be written',
      );
      await waitUntil(async () => (await outboxBacklog(redis, services.prefix)) === 0, 'the outbox to drain');
      expect(await decisionsOf(userId)).toBe(all.length);
      expect(await conservationProblems(services.database.sql, redis, services.prefix, [userId])).toEqual([]);
    } finally {
      await writer.kill('SIGTERM');
      await hotPath.close();
      hotPath = null;
    }
  }, 120_000);

  it('(b) data gone: cache:warm and the replay of issuing_authorization.created bring every approval back; a writer running through the loss keeps draining', async () => {
    hotPath = await startHotPath(services, { VELOCITY_LIMIT_PER_MIN: '10000' });
    const { userId, cardId } = await newUser(10_000n);
    const writer = await startWriter();
    try {
      const written: Approval[] = [];
      for (let i = 0; i < 4; i++) written.push(await approve(cardId, 1_500 + i));
      await waitUntil(async () => (await pgHolds(userId)) === total(written), 'the writer to write');
      // Postgres is held up (a lock the writer's audit insert waits on), as in writer lag. The writer
      // reads one approval (U) and waits with it in memory; two more (L) stay unread in the outbox.
      let release = () => {};
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      let locked = () => {};
      const isLocked = new Promise<void>((resolve) => {
        locked = resolve;
      });
      const blocker = services.database.sql.begin(async (tx) => {
        await tx`select 1 from audit_log_head where singleton for update`;
        locked();
        await released;
      });
      await isLocked;
      const inFlight = [await approve(cardId, 2_500)];
      await waitUntil(async () => (await pendingCount()) === 1, 'the writer to read U');
      await new Promise((r) => setTimeout(r, 300)); // its read-ahead returns empty
      const lost = [await approve(cardId, 2_600), await approve(cardId, 2_700)];
      expect(await pendingCount()).toBe(1);
      expect(await outboxBacklog(redis, services.prefix)).toBe(3);
      await hotPath.close();
      hotPath = null;

      // The loss: Redis dies and its disk with it (the AOF directory is gone), then it starts empty.
      await server.kill('SIGKILL');
      for (const name of readdirSync(server.dir))
        rmSync(path.join(server.dir, name), { recursive: true, force: true });
      await server.start();
      await redisReady();
      expect(await redis.dbsize()).toBe(0);
      // Postgres comes back: the writer commits U from its memory. L is gone with Redis.
      release();
      await blocker;
      await waitUntil(
        async () => (await pgHolds(userId)) === total([...written, ...inFlight]),
        'U to be written',
      );
      expect(await decisionsOf(userId)).toBe(written.length + inFlight.length);

      // Recovery step 1: npm run cache:warm (market + accounts from Postgres).
      const warm = await runScript('scripts/cache-warm.ts', [], {
        PATH: process.env['PATH'] ?? '',
        // The hot path's role: warming reads what a hot path rebuilds an account from.
        ...serviceEnv('credana_hot_path'),
      });
      expect(warm.code, warm.stderr).toBe(0);
      expect(warm.stdout).toContain('market of 1 assets published');
      await waitUntil(
        async () => (await redisHolds(userId)) === (await pgHolds(userId)),
        'the account rebuilt',
      );

      // A hot-path process started after the loss has prices only because cache:warm published them.
      hotPath = await startHotPath(services, { VELOCITY_LIMIT_PER_MIN: '10000' });
      const later = await approve(cardId, 700);

      // Recovery step 2: Stripe's issuing_authorization.created for every approval of the window is
      // resent (same event ids): the approvals Postgres lacks come back as holds; the others move nothing.
      for (const a of [...written, ...inFlight, ...lost]) {
        const res = await post(hotPath, '/stripe/events', createdEvent(cardId, a));
        expect(res.status, JSON.stringify(res.json)).toBe(200);
      }
      const all = [...written, ...inFlight, ...lost, later];
      expect(await redisHolds(userId)).toBe(total(all));
      // The writer, running since before the loss, drains what came after it (the consumer group the
      // loss took with it is recreated).
      await waitUntil(
        async () => (await pgHolds(userId)) === total(all),
        'Postgres to have every hold',
        30_000,
      );
      await waitUntil(async () => (await outboxBacklog(redis, services.prefix)) === 0, 'the outbox to drain');
      expect(await conservationProblems(services.database.sql, redis, services.prefix, [userId])).toEqual([]);
      // What the loss cost: the decision records of L (their holds are back, as Stripe's authorizations).
      expect(await decisionsOf(userId)).toBe(all.length - lost.length);
      // Every approval's authorization is held at its amount, once.
      const held = await services.database.sql<{ id: string; held_cents: string }[]>`
        select id, held_cents::text from authorizations where user_id = ${userId} order by id`;
      expect(new Map(held.map((r) => [r.id, BigInt(r.held_cents)]))).toEqual(
        new Map(all.map((a) => [a.authorizationId, BigInt(a.cents)])),
      );
    } finally {
      await writer.kill('SIGTERM');
    }
  }, 120_000);
});
