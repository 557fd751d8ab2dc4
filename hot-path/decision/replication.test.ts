// REDIS_WAIT_REPLICAS on real processes: a private primary and a replica (`--replicaof`), the in-process
// hot path, a real ledger-writer process. An approval is answered only once the replica acknowledged
// it (WAIT, pipelined with the decision); a replica that does not (SIGSTOP) turns approvals into
// declines `replication_unconfirmed` with their holds released; after kill -9 of the primary and a
// promotion of the replica, every approval that was answered is there.
import { execFileSync } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitForEmptyOutbox } from '../../ledger-writer/testing.ts';
import { utcDay } from '../../shared/redis/account.ts';
import { createRedis, type Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { runScript } from '../../shared/redis/script.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPath, post, startHotPath } from '../../test/support/hot-path.ts';
import { type RedisServer, spawnService, startRedisServer } from '../../test/support/processes.ts';
import { authorizationEvent, authorizationRequest, TEST_WEBHOOK_SECRET } from '../../test/support/stripe.ts';
import { startTcpProxy, type TcpProxy } from '../../test/support/tcp-proxy.ts';
import { DECIDE } from './lua.ts';
import { createReplicaWaiter } from './replica-wait.ts';

const PRICE = 300_000_000_000n;
// The test config's Redis budget is 1,000 ms: the WAIT may block up to half of it.
const WAIT_ON = {
  REDIS_WAIT_REPLICAS: '1',
  REDIS_WAIT_TIMEOUT_MS: '200',
  VELOCITY_LIMIT_PER_MIN: '10000',
};
const WAIT_OFF = { REDIS_WAIT_REPLICAS: '0', VELOCITY_LIMIT_PER_MIN: '10000' };

let shared: TestServices;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  shared = await setUpServices();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await shared?.close();
});

interface Pair {
  primary: RedisServer;
  replica: RedisServer;
  primaryRedis: Redis;
  replicaRedis: Redis;
  services: TestServices;
  replicaPid: number;
  /** The replication link (replica → proxy → primary): stall it to partition, cut it to lose what it held. */
  link: TcpProxy;
}

function pidOf(server: RedisServer): number {
  const info = execFileSync('redis-cli', ['-p', String(server.port), 'info', 'server'], { encoding: 'utf8' });
  return Number(/process_id:(\d+)/.exec(info)?.[1]);
}

/**
 * Until the primary reports its replica online. A first sync is a full one (an RDB transfer, then the
 * replica rewrites its append-only file with fsync on every write): on a loaded 2-core machine it took
 * longer than the 5 s this waited before (CI, 2026-12-07), so the wait is bounded at 30 s and says what
 * the primary last reported.
 */
async function waitForReplicaOnline(primaryRedis: Redis): Promise<void> {
  const deadline = Date.now() + 30_000;
  let info = '';
  while (Date.now() < deadline) {
    info = await primaryRedis.info('replication');
    if (/connected_slaves:1/.test(info) && /slave0:.*state=online/.test(info)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(
    `the replica did not come online in 30 s; the primary reports: ${info.replace(/\r?\n/g, ' ')}`,
  );
}

/** Until the replica has acknowledged everything written so far (a WAIT of the test's own). */
async function waitForReplicaAck(primaryRedis: Redis): Promise<void> {
  await primaryRedis.set('replication-test-marker', '1');
  expect(await primaryRedis.call('WAIT', 1, 10_000)).toBe(1);
}

/** A private primary with one replica, the market seeded on the primary (and so on the replica). */
async function startPair(): Promise<Pair> {
  const primary = await startRedisServer();
  cleanups.push(() => primary.destroy());
  const link = await startTcpProxy(primary.port);
  // A connection made while stalled waits unconnected and paused, and would keep close() waiting:
  // resumed first, it connects (or fails) and closes.
  cleanups.push(() => {
    link.resume();
    return link.close();
  });
  const linkPort = new URL(link.url('redis')).port;
  const replica = await startRedisServer(['--replicaof', '127.0.0.1', linkPort]);
  const replicaPid = pidOf(replica);
  cleanups.push(async () => {
    // A stopped replica must be let go on before it is killed and waited for.
    try {
      process.kill(replicaPid, 'SIGCONT');
    } catch {}
    await replica.destroy();
  });
  const primaryRedis = createRedis({ url: primary.url });
  const replicaRedis = createRedis({ url: replica.url });
  cleanups.push(() => {
    primaryRedis.disconnect();
    replicaRedis.disconnect();
  });
  await waitForReplicaOnline(primaryRedis);
  // A private single Redis, whatever TEST_REDIS says (no cluster nodes handed to the services).
  const services = { ...shared, redis: primaryRedis, redisUrl: primary.url, redisClusterNodes: [] };
  await seedAsset(
    services.database.sql,
    primaryRedis,
    services.prefix,
    WETH,
    PRICE,
    Math.floor(Date.now() / 1000),
  );
  return { primary, replica, primaryRedis, replicaRedis, services, replicaPid, link };
}

async function hotPathOn(services: TestServices, extra: Record<string, string>): Promise<HotPath> {
  const hotPath = await startHotPath(services, extra);
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= hotPath.close();
    return closing;
  };
  cleanups.push(close);
  return { ...hotPath, close };
}

async function seedRichUser(services: TestServices) {
  return seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(1_000_000n, PRICE) }],
  });
}

async function counter(hotPath: HotPath, name: 'redisRoundTrips'): Promise<number> {
  return (await hotPath.metrics[name].get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function waitCalls(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  return Number(/cmdstat_wait:calls=(\d+)/.exec(info)?.[1] ?? '0');
}

/** A real ledger-writer process on `redisUrl`, until the outbox is empty. */
async function drain(services: TestServices, redisUrl: string, redis: Redis): Promise<void> {
  const writer = await spawnService(
    'ledger-writer/main.ts',
    {
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      DATABASE_URL: services.urlFor('credana_ledger_writer'),
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: services.prefix,
      STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
      LEDGER_WRITER_PORT: '0',
    },
    'ledger-writer ready',
  );
  try {
    await waitForEmptyOutbox(redis, services.prefix, 60_000);
  } finally {
    await writer.kill('SIGTERM');
  }
}

interface Swipe {
  userId: string;
  cardId: string;
  authorizationId: string;
  amountCents: number;
  approved: boolean;
  reason: string | undefined;
  createdS: number;
}

async function swipe(hotPath: HotPath, user: { userId: string; cardId: string }, amountCents: number) {
  const request = authorizationRequest({ cardId: user.cardId, amountCents });
  const res = await post(hotPath, '/stripe/authorizations', request);
  expect(res.status).toBe(200);
  return {
    request,
    swipe: {
      ...user,
      authorizationId: request.data.object.id,
      amountCents,
      approved: res.json.approved === true,
      reason: res.json.metadata?.reason,
      createdS: request.created,
    } satisfies Swipe,
  };
}

describe('approvals wait for a replica (REDIS_WAIT_REPLICAS)', () => {
  it('with a healthy replica: each approval is followed by a WAIT (one more round trip, declines none), and the replica has the hold when it is answered', async () => {
    const pair = await startPair();
    const hotPath = await hotPathOn(pair.services, WAIT_ON);
    const user = await seedRichUser(pair.services);
    const keys = userKeys(pair.services.prefix, user.userId);
    // The first decision also builds the account (more round trips); measure the steady state after it.
    expect((await swipe(hotPath, user, 100)).swipe.approved).toBe(true);
    const tripsBefore = await counter(hotPath, 'redisRoundTrips');
    const waitsBefore = await waitCalls(pair.primaryRedis);
    let held = 100;
    for (let i = 1; i <= 20; i++) {
      const { swipe: s } = await swipe(hotPath, user, 100 + i);
      expect(s.approved).toBe(true);
      held += 100 + i;
      // Read from the replica the moment the answer is in: the hold is already there.
      expect(await pair.replicaRedis.hget(keys.holds, s.authorizationId)).toBe(String(100 + i));
      expect(await pair.replicaRedis.hget(keys.account, 'hold')).toBe(String(held));
    }
    expect((await counter(hotPath, 'redisRoundTrips')) - tripsBefore).toBe(40);
    expect((await waitCalls(pair.primaryRedis)) - waitsBefore).toBe(20);
    // A decline waits for nothing: one round trip, no WAIT.
    const declined = await swipe(hotPath, user, 2_000_000);
    expect(declined.swipe).toMatchObject({ approved: false, reason: 'insufficient_credit' });
    expect((await counter(hotPath, 'redisRoundTrips')) - tripsBefore).toBe(41);
    expect((await waitCalls(pair.primaryRedis)) - waitsBefore).toBe(20);
  });

  it('with the replica stopped: approvals are declined replication_unconfirmed and their holds released; a replay is declined with its hold kept until Stripe says; Postgres agrees once written', async () => {
    const pair = await startPair();
    const hotPath = await hotPathOn(pair.services, WAIT_ON);
    // A process without the rule: it stands for one that died between its script and its WAIT.
    const unwaited = await hotPathOn(pair.services, WAIT_OFF);
    const user = await seedRichUser(pair.services);
    const keys = userKeys(pair.services.prefix, user.userId);
    const first = await swipe(hotPath, user, 1_000);
    expect(first.swipe.approved).toBe(true);

    process.kill(pair.replicaPid, 'SIGSTOP');
    // An approval stored but never confirmed, then replayed to the waiting process, whose own last
    // write (the first swipe) the replica did acknowledge: the replay must not ride on that.
    const stored = await swipe(unwaited, user, 2_000);
    expect(stored.swipe.approved).toBe(true);
    const replayed = await post(hotPath, '/stripe/authorizations', stored.request);
    expect(replayed.json).toMatchObject({ approved: false, metadata: { reason: 'replication_unconfirmed' } });
    // Its first attempt may have been answered "approved" (Stripe may hold that answer): its hold is
    // kept, and the stored first answer with it (docs/chaos.md, cluster item 5).
    expect(await pair.primaryRedis.hget(keys.holds, stored.swipe.authorizationId)).toBe('2000');
    expect(await pair.primaryRedis.get(keys.decision(stored.request.id))).toMatch(/^1\|2000\|approved\|dec_/);

    const withdrawn: Swipe[] = [];
    for (let i = 0; i < 5; i++) {
      const { request, swipe: s } = await swipe(hotPath, user, 300 + i);
      expect(s).toMatchObject({ approved: false, reason: 'replication_unconfirmed' });
      withdrawn.push(s);
      expect(await pair.primaryRedis.hget(keys.holds, s.authorizationId)).toBeNull();
      expect(await pair.primaryRedis.get(keys.decision(request.id))).toMatch(
        /^0\|0\|replication_unconfirmed\|dec_/,
      );
      // Stripe retrying the request gets the same decline, and nothing is reserved again.
      const again = await post(hotPath, '/stripe/authorizations', request);
      expect(again.json).toMatchObject({ approved: false, metadata: { reason: 'replication_unconfirmed' } });
    }
    expect(await pair.primaryRedis.hget(keys.account, 'hold')).toBe('3000');
    expect(await pair.primaryRedis.get(keys.daySpend(utcDay(Date.now())))).toBe('3000');

    process.kill(pair.replicaPid, 'SIGCONT');
    await waitForReplicaOnline(pair.primaryRedis);
    expect((await swipe(hotPath, user, 400)).swipe.approved).toBe(true);
    // Stripe's word on the replayed swipe: it took the replay's decline (the first attempt's answer
    // never reached it). Its `created` releases the hold that was kept.
    const created = authorizationEvent({
      type: 'issuing_authorization.created',
      cardId: user.cardId,
      authorizationId: stored.swipe.authorizationId,
      amountCents: 0,
      approved: false,
      status: 'closed',
      requestHistory: 1,
      createdS: stored.swipe.createdS,
    });
    expect((await post(hotPath, '/stripe/events', created)).status).toBe(200);
    expect(await pair.primaryRedis.hget(keys.holds, stored.swipe.authorizationId)).toBeNull();

    await drain(pair.services, pair.primary.url, pair.primaryRedis);
    const sql = pair.services.database.sql;
    expect(await conservationProblems(sql, pair.primaryRedis, pair.services.prefix, [user.userId])).toEqual(
      [],
    );
    const [account] = await sql<{ holds_cents: string }[]>`
      select holds_cents from credit_accounts where user_id = ${user.userId}`;
    expect(account?.holds_cents).toBe('1400');
    const rows = await sql<{ id: string; approved: boolean; held_cents: string; status: string }[]>`
      select id, approved, held_cents::text, status from authorizations
      where id in ${sql([stored.swipe.authorizationId, ...withdrawn.map((s) => s.authorizationId)])}`;
    expect(rows).toHaveLength(6);
    for (const row of rows) expect(row).toMatchObject({ approved: false, held_cents: '0', status: 'closed' });
  });

  it("a replayed approval is covered by the replay's own WAIT, also on a connection whose last write was acknowledged", async () => {
    const pair = await startPair();
    const other = createRedis({ url: pair.primary.url });
    cleanups.push(() => other.disconnect());
    // This connection's last write is acknowledged; then the link stalls and another connection (a
    // process that died between its script and its WAIT) stores an approval the replica never gets.
    await waitForReplicaAck(pair.primaryRedis);
    pair.link.stall();
    const keys = userKeys(pair.services.prefix, '00000000-0000-4000-8000-000000000001');
    const decisionKey = keys.decision('evt_replayed');
    await other.set(decisionKey, '1|500|approved|dec_first', 'EX', 3600);
    const decideKeys = [keys.account, keys.cards, keys.holds, keys.holdExpiries, decisionKey];
    decideKeys.push(keys.daySpend('20260101'), keys.velocity, keys.outbox, keys.authState('iauth_x'));
    const reply = await runScript<string[]>(
      pair.primaryRedis,
      DECIDE,
      decideKeys,
      Array.from({ length: 17 }, () => '0'),
    );
    expect(reply).toEqual(['dup', '1|500|approved|dec_first']);
    const waiter = createReplicaWaiter(pair.primaryRedis, 1, 100);
    expect(await waiter.acknowledged(keys.outbox)).toBe(0);
    expect(await pair.primaryRedis.ttl(decisionKey)).toBeGreaterThan(3000);
  });

  it('failover: kill -9 of the primary and the replica promoted keeps the hold of every approval answered', async () => {
    const pair = await startPair();
    const hotPath = await hotPathOn(pair.services, WAIT_ON);
    const users = await Promise.all([0, 1, 2].map(() => seedRichUser(pair.services)));
    const swipes: Swipe[] = [];
    const round = async (n: number) => {
      const answers = await Promise.all(users.map((u, i) => swipe(hotPath, u, 100 + n * 10 + i)));
      swipes.push(...answers.map((a) => a.swipe));
    };
    for (let n = 0; n < 6; n++) await round(n);
    // The replication link stalls (a partition) while swipes keep coming, concurrently; then the
    // primary dies and what the link held back is lost with it.
    const inFlight = round(6);
    await new Promise((r) => setImmediate(r));
    pair.link.stall();
    await inFlight;
    for (let n = 7; n < 12; n++) await round(n);
    await pair.primary.kill('SIGKILL');
    pair.link.cut();
    await pair.replicaRedis.call('REPLICAOF', 'NO', 'ONE');

    const approved = swipes.filter((s) => s.approved);
    const declined = swipes.filter((s) => !s.approved);
    expect(approved.length).toBeGreaterThanOrEqual(18);
    expect(declined.length).toBeGreaterThan(0);
    for (const s of declined) expect(s.reason).toBe('replication_unconfirmed');
    for (const s of approved) {
      const keys = userKeys(pair.services.prefix, s.userId);
      expect(await pair.replicaRedis.hget(keys.holds, s.authorizationId)).toBe(String(s.amountCents));
    }

    // The hot path and the writer now point at the promoted replica; Stripe's issuing_authorization.created
    // (its word on each swipe, as we answered it) arrives, and the books agree with the cache.
    await hotPath.close();
    const promoted = { ...pair.services, redis: pair.replicaRedis, redisUrl: pair.replica.url };
    const after = await hotPathOn(promoted, WAIT_OFF);
    for (const s of swipes) {
      const event = authorizationEvent({
        type: 'issuing_authorization.created',
        cardId: s.cardId,
        authorizationId: s.authorizationId,
        amountCents: s.approved ? s.amountCents : 0,
        approved: s.approved,
        status: s.approved ? 'pending' : 'closed',
        requestHistory: 1,
        createdS: s.createdS,
      });
      const res = await post(after, '/stripe/events', event);
      expect(res.status).toBe(200);
    }
    await drain(promoted, pair.replica.url, pair.replicaRedis);
    const sql = pair.services.database.sql;
    expect(
      await conservationProblems(
        sql,
        pair.replicaRedis,
        pair.services.prefix,
        users.map((u) => u.userId),
      ),
    ).toEqual([]);
    const [total] = await sql<{ held: string }[]>`
      select coalesce(sum(holds_cents), 0)::text as held from credit_accounts
      where user_id in ${sql(users.map((u) => u.userId))}`;
    expect(total?.held).toBe(String(approved.reduce((sum, s) => sum + s.amountCents, 0)));
  });

  it('without the rule (REDIS_WAIT_REPLICAS=0) the same failover loses approvals that were answered', async () => {
    const pair = await startPair();
    const hotPath = await hotPathOn(pair.services, WAIT_OFF);
    const user = await seedRichUser(pair.services);
    const keys = userKeys(pair.services.prefix, user.userId);
    const kept = await swipe(hotPath, user, 100);
    expect(kept.swipe.approved).toBe(true);
    await waitForReplicaAck(pair.primaryRedis);
    pair.link.stall();
    const lost = await swipe(hotPath, user, 200);
    expect(lost.swipe.approved).toBe(true);
    await pair.primary.kill('SIGKILL');
    pair.link.cut();
    await pair.replicaRedis.call('REPLICAOF', 'NO', 'ONE');
    expect(await pair.replicaRedis.hget(keys.holds, kept.swipe.authorizationId)).toBe('100');
    expect(await pair.replicaRedis.hget(keys.holds, lost.swipe.authorizationId)).toBeNull();
  });
});
