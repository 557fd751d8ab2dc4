// REDIS_WAIT_REPLICAS on a Redis Cluster, under live signed traffic: a private six-node cluster (whatever
// TEST_REDIS says), two hot-path processes and a ledger writer process on it, users spread over the
// shards so some live on the primary that is killed (kill -9) mid-traffic. Its replica is promoted; every
// authorization answered "approved" still has its hold; once Stripe's word on each swipe is in and the
// writer has drained, Postgres holds exactly what was approved (the outbox applied once), nothing is
// dead-lettered, the conservation check is clean, and no user was approved beyond their credit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForEmptyOutbox } from '../ledger-writer/testing.ts';
import { createRedis, isCluster, type Redis } from '../shared/redis/client.ts';
import { deadLetterKey, userKeys } from '../shared/redis/keys.ts';
import { conservationProblems } from './support/conservation.ts';
import { redisEnv, setUpServices, type TestServices } from './support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from './support/fixtures.ts';
import { testConfig } from './support/hot-path.ts';
import { freePort, type ServiceProcess, spawnService } from './support/processes.ts';
import { type RedisCluster, startRedisCluster } from './support/redis-cluster.ts';
import { authorizationEvent, authorizationRequest, sign, TEST_WEBHOOK_SECRET } from './support/stripe.ts';

const PRICE = 300_000_000_000n;
/** Credit of user i: every third covers only three swipes (declines for credit, which must stay declines). */
const creditCents = (i: number) => (i % 3 === 0 ? 3_100n : 1_000_000n);
const USERS = 12;
const SETTINGS = {
  REDIS_WAIT_REPLICAS: '1',
  REDIS_WAIT_TIMEOUT_MS: '200',
  VELOCITY_LIMIT_PER_MIN: '10000',
  DECISION_BUDGET_MS: '1900',
  REDIS_COMMAND_TIMEOUT_MS: '1000',
  REDIS_DECISION_BUDGET_MS: '1000',
};

let shared: TestServices;
let cluster: RedisCluster;
let redis: Redis;
let services: TestServices;
const processes: ServiceProcess[] = [];

beforeAll(async () => {
  shared = await setUpServices();
  cluster = await startRedisCluster();
  redis = createRedis({ url: 'redis://unused', clusterNodes: cluster.seeds });
  services = { ...shared, redis, redisUrl: 'redis://unused', redisClusterNodes: cluster.seeds };
  await seedAsset(services.database.sql, redis, services.prefix, WETH, PRICE, Math.floor(Date.now() / 1000));
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill('SIGKILL')));
  redis?.disconnect();
  await cluster?.destroy();
  await shared?.close();
});

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`not reached in ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The `host:port` of the primary that owns `key`'s slot, from the client's slot map. */
async function ownerOf(key: string): Promise<string> {
  if (!isCluster(redis)) throw new Error('expected a cluster client');
  const slot = Number(await redis.cluster('KEYSLOT', key));
  const owner = redis.slots[slot]?.[0];
  if (owner === undefined) throw new Error(`no node owns slot ${slot}`);
  return owner;
}

/** The pid of the replica of the primary on `primaryPort`. */
async function replicaPidOf(primaryPort: number): Promise<number> {
  for (const node of cluster.nodes) {
    const probe = createRedis({ url: `redis://127.0.0.1:${node.port}` });
    try {
      const replication = await probe.info('replication');
      if (replication.includes('role:slave') && replication.includes(`master_port:${primaryPort}\r`)) {
        return Number(/process_id:(\d+)/.exec(await probe.info('server'))?.[1]);
      }
    } finally {
      probe.disconnect();
    }
  }
  throw new Error(`no replica of the primary on ${primaryPort}`);
}

function baseEnv(): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    ...redisEnv(services),
    REDIS_KEY_PREFIX: services.prefix,
    STRIPE_WEBHOOK_SECRETS: TEST_WEBHOOK_SECRET,
  };
}

async function startHotPathProcess(): Promise<string> {
  const port = await freePort();
  const hotPath = await spawnService(
    'hot-path/main.ts',
    {
      ...baseEnv(),
      ...SETTINGS,
      DATABASE_URL: testConfig(services).DATABASE_URL,
      HOT_PATH_PORT: String(port),
      // Each decision's log line (its source: redis or the Postgres fallback) for the failure message.
      LOG_LEVEL: 'info',
    },
    'hot-path ready',
  );
  processes.push(hotPath);
  return `http://127.0.0.1:${port}`;
}

async function postSigned(url: string, body: unknown) {
  const raw = JSON.stringify(body);
  const res = await fetch(url, {
    method: 'POST',
    body: raw,
    headers: { 'content-type': 'application/json', 'stripe-signature': sign(raw) },
  });
  return {
    status: res.status,
    json: (await res.json()) as { approved?: boolean; metadata?: { reason?: string } },
  };
}

interface Swipe {
  userId: string;
  cardId: string;
  authorizationId: string;
  amountCents: number;
  approved: boolean;
  reason: string | undefined;
  createdS: number;
  /** When it was sent: before the trouble, while the victim's replica was stopped, after the failover. */
  phase: Phase;
  eventId: string;
}

type Phase = 'before' | 'replicaStopped' | 'afterFailover';

describe('REDIS_WAIT_REPLICAS on a Redis Cluster', () => {
  it('kill -9 of a primary under live traffic from two hot paths: every approval answered keeps its hold, and the books balance', async () => {
    const sql = services.database.sql;
    const users: { userId: string; cardId: string; creditCents: bigint }[] = [];
    for (let i = 0; i < USERS; i++) {
      const credit = creditCents(i);
      const user = await seedUser(sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(credit, PRICE) }],
      });
      users.push({ ...user, creditCents: credit });
    }
    // The victim: the primary holding the most of these users' shards.
    const owners = await Promise.all(users.map((u) => ownerOf(userKeys(services.prefix, u.userId).account)));
    const counts = new Map<string, number>();
    for (const o of owners) counts.set(o, (counts.get(o) ?? 0) + 1);
    const [victimAddress] = [...counts.entries()].sort((a, b) => b[1] - a[1])[0] ?? [''];
    const victim = cluster.nodes.find((n) => `127.0.0.1:${n.port}` === victimAddress);
    if (victim === undefined) throw new Error(`no node at ${victimAddress}`);
    const onVictim = users.filter((_, i) => owners[i] === victimAddress);
    expect(onVictim.length).toBeGreaterThanOrEqual(2);
    expect(onVictim.length).toBeLessThan(users.length);
    const victimIds = new Set(onVictim.map((u) => u.userId));

    const writer = await spawnService(
      'ledger-writer/main.ts',
      { ...baseEnv(), DATABASE_URL: services.urlFor('credana_ledger_writer'), LEDGER_WRITER_PORT: '0' },
      'ledger-writer ready',
    );
    processes.push(writer);
    const hotPaths = [await startHotPathProcess(), await startHotPathProcess()];

    const swipes: Swipe[] = [];
    let phase: Phase = 'before';
    let round = 0;
    const sendRound = async () => {
      const n = round++;
      const sentIn = phase;
      await Promise.all(
        users.map(async (user, i) => {
          const amountCents = 1_000 + ((n * USERS + i) % 7);
          const request = authorizationRequest({ cardId: user.cardId, amountCents });
          const res = await postSigned(`${hotPaths[(n + i) % 2]}/stripe/authorizations`, request);
          expect(res.status).toBe(200);
          swipes.push({
            userId: user.userId,
            cardId: user.cardId,
            authorizationId: request.data.object.id,
            amountCents,
            approved: res.json.approved === true,
            reason: res.json.metadata?.reason,
            createdS: request.created,
            phase: sentIn,
            eventId: request.id,
          });
        }),
      );
    };
    // Live traffic: rounds back to back, each concurrent over all users and both processes.
    let stop = false;
    const traffic = (async () => {
      while (!stop) await sendRound();
    })();
    try {
      await until(async () => round >= 3, 'three rounds before the trouble');
      // The victim's replica stops (SIGSTOP: a partition, as the single-node test stalls its link) while
      // traffic goes on; then the primary dies with what the replica never got, and the replica comes
      // back and is promoted. Only a WAIT sent to the node that ran the script (the victim) can tell
      // those approvals apart: a WAIT on any other node's connection, which wrote nothing there, counts
      // its healthy replica at once.
      const replicaPid = await replicaPidOf(victim.port);
      process.kill(replicaPid, 'SIGSTOP');
      try {
        phase = 'replicaStopped';
        const roundAtStop = round;
        await until(async () => round >= roundAtStop + 2, 'two rounds with the replica stopped');
        await victim.kill('SIGKILL');
      } finally {
        process.kill(replicaPid, 'SIGCONT');
      }
      const alive = cluster.nodes.filter((n) => n !== victim).map((n) => n.port);
      await until(async () => {
        if (!isCluster(redis)) return false;
        const slots = (await redis.cluster('SLOTS')) as unknown as [number, number, [string, number]][];
        const moved = slots.every(([, , [, port]]) => port !== victim.port);
        const ok = await Promise.all(
          alive.map(async (port) => {
            const probe = createRedis({ url: `redis://127.0.0.1:${port}` });
            try {
              return /cluster_state:ok/.test(String(await probe.cluster('INFO')));
            } finally {
              probe.disconnect();
            }
          }),
        );
        return moved && ok.every(Boolean);
      }, 'a replica promoted and cluster_state:ok');
      phase = 'afterFailover';
      const roundAtFailover = round;
      await until(async () => round >= roundAtFailover + 3, 'three rounds after the failover');
    } finally {
      stop = true;
      await traffic;
    }

    const approved = swipes.filter((s) => s.approved);
    const reasons: Record<string, number> = {};
    for (const s of swipes) reasons[s.reason ?? '?'] = (reasons[s.reason ?? '?'] ?? 0) + 1;
    // Enough of each kind for the test to mean something: approvals on the victim's users, and
    // approvals after the failover.
    const kinds = {
      reasons,
      approvedOnVictim: approved.some((s) => onVictim.some((u) => u.userId === s.userId)),
      approvedAfterFailover: approved.some((s) => s.phase === 'afterFailover'),
      declinedForCredit: reasons['insufficient_credit'] !== undefined,
      // The WAIT reached the victim (the node that ran the script) while its replica was stopped.
      unconfirmedOnVictim: swipes.some(
        (s) =>
          s.reason === 'replication_unconfirmed' && s.phase === 'replicaStopped' && victimIds.has(s.userId),
      ),
    };
    expect(kinds).toMatchObject({
      approvedOnVictim: true,
      approvedAfterFailover: true,
      declinedForCredit: true,
      unconfirmedOnVictim: true,
    });

    // Every approval answered has its hold on the (promoted) primaries.
    const missing: string[] = [];
    for (const s of approved) {
      const held = await redis.hget(userKeys(services.prefix, s.userId).holds, s.authorizationId);
      if (held === String(s.amountCents)) continue;
      // What each side says of the decision, and the hot path's own line (source redis or postgres).
      const inRedis = await redis.get(userKeys(services.prefix, s.userId).decision(s.eventId));
      const [inPostgres] = await sql<{ approved: boolean; reason: string }[]>`
        select approved, reason from decisions where event_id = ${s.eventId}`;
      const logged = processes
        .flatMap((p) => p.output().split('\n'))
        .find((line) => line.includes(s.eventId) && line.includes('authorization decided'));
      missing.push(
        `${s.authorizationId} (${victimIds.has(s.userId) ? 'victim' : 'other'} user, ${s.phase}): hold ${held}; ` +
          `Redis decision ${inRedis}; Postgres decision ${JSON.stringify(inPostgres ?? null)}; ${logged ?? 'no log line'}`,
      );
    }
    expect({ missing, reasons }).toEqual({ missing: [], reasons });

    // No user approved beyond their credit.
    for (const user of users) {
      const total = approved
        .filter((s) => s.userId === user.userId)
        .reduce((sum, s) => sum + s.amountCents, 0);
      expect(BigInt(total)).toBeLessThanOrEqual(user.creditCents);
    }

    // Stripe's word on each swipe, as we answered it, then the writer drains.
    for (const [i, s] of swipes.entries()) {
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
      const res = await postSigned(`${hotPaths[i % 2]}/stripe/events`, event);
      expect(res.status).toBe(200);
    }
    await waitForEmptyOutbox(redis, services.prefix, 60_000);

    expect(await redis.xrange(deadLetterKey(services.prefix), '-', '+')).toEqual([]);
    const userIds = users.map((u) => u.userId);
    expect(await conservationProblems(sql, redis, services.prefix, userIds)).toEqual([]);
    const [total] = await sql<{ held: string }[]>`
      select coalesce(sum(holds_cents), 0)::text as held from credit_accounts where user_id in ${sql(userIds)}`;
    expect(total?.held).toBe(String(approved.reduce((sum, s) => sum + s.amountCents, 0)));
    const rows = await sql<{ id: string; approved: boolean; held_cents: string }[]>`
      select id, approved, held_cents::text from authorizations where id in ${sql(swipes.map((s) => s.authorizationId))}`;
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const s of swipes) {
      expect(byId.get(s.authorizationId)).toMatchObject({
        approved: s.approved,
        held_cents: s.approved ? String(s.amountCents) : '0',
      });
    }
  });
});
