// Proves that a Redis attempt held in a stalled connection past its request's answer leaves Redis and
// Postgres where Stripe's events say (docs/chaos.md bugs 5 and 6): run after Stripe's own event for its
// request, it reserves nothing; run before, beside a fallback grant, its hold is one Postgres follows
// until the adoption, so an event applied by a process cut off from Postgres is never a release Postgres
// refuses. A private redis-server behind a TCP proxy that the test stalls, the in-process hot path on it,
// lifecycle handlers of peers that reach Redis directly, real Postgres, the ledger writer's own apply.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../shared/db/client.ts';
import { createLifecycle, type Lifecycle } from '../../shared/lifecycle/handler.ts';
import { createRedis, type Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { lifecycleEvent } from '../../shared/stripe/events.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPath, post, startHotPath, testConfig } from '../../test/support/hot-path.ts';
import { freePort, type RedisServer, startRedisServer } from '../../test/support/processes.ts';
import { drainOutbox } from '../../test/support/reconcile.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from '../../test/support/stripe.ts';
import { startTcpProxy, type TcpProxy } from '../../test/support/tcp-proxy.ts';

const PRICE = 300_000_000_000n;
/** What the fallback grants one user before adoption, here: less than the late attempt's grant. */
const FALLBACK_CAP = 1_000;
let shared: TestServices;
let server: RedisServer;
let redis: Redis;
let proxy: TcpProxy;
/** A private single Redis, whatever TEST_REDIS says (a proxy cannot stand in front of a cluster). */
let services: TestServices;
let hotPath: HotPath;
/** A peer's lifecycle handler: it reaches Redis directly while the hot path's connection is stalled. */
let peer: Lifecycle;
/** A peer's lifecycle handler that reaches Redis but not Postgres (nothing listens on its port). */
let cutOff: Lifecycle;
let unreachable: Database;

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
      FALLBACK_GRANT_CENTS_MAX: String(FALLBACK_CAP),
    },
  );
  peer = createLifecycle({ redis, sql: shared.database.sql, settings: testConfig(services) });
  unreachable = createDatabase({
    url: `postgres://postgres@127.0.0.1:${await freePort()}/none`,
    connectTimeoutS: 1,
  });
  cutOff = createLifecycle({ redis, sql: unreachable.sql, settings: testConfig(services) });
});

afterAll(async () => {
  proxy?.resume();
  await hotPath?.close();
  await proxy?.close();
  await unreachable?.close();
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

/**
 * A user with plenty of credit, and the hot path warm for them: decisions are tried until one came from
 * Redis (a cold process's first may go to the fallback while its lease is acquired, or be declined
 * when that is slow on a busy machine). The card's owner,
 * the account snapshot and the lease are then known, so the next decision's only Redis command is the
 * DECIDE script itself.
 */
async function warmUser() {
  const user = await seedUser(shared.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
  });
  await until(async () => {
    const before = await fromRedis();
    await post(
      hotPath,
      '/stripe/authorizations',
      authorizationRequest({ cardId: user.cardId, amountCents: 0 }),
    );
    return (await fromRedis()) > before;
  }, 'a decision from Redis');
  return user;
}

/** Decides `request` with the hot path's Redis connection stalled: the DECIDE waits in the proxy. */
async function decideStalled(request: ReturnType<typeof authorizationRequest>) {
  proxy.stall();
  try {
    return (await post(hotPath, '/stripe/authorizations', request)).json;
  } catch (error) {
    proxy.resume();
    throw error;
  }
}

/** The stall ends: the late DECIDE reaches Redis and runs (it stores an answer for the request). */
async function resumeUntilDecided(userId: string, eventId: string): Promise<string> {
  proxy.resume();
  const key = userKeys(services.prefix, userId).decision(eventId);
  await until(async () => (await redis.exists(key)) === 1, 'the late DECIDE ran');
  return (await redis.get(key)) as string;
}

async function stripe(by: Lifecycle, event: ReturnType<typeof authorizationEvent>) {
  expect((await by.apply(lifecycleEvent.parse(event), JSON.stringify(event))).applied).toBe(true);
}

/** Both books, after the outbox is written to Postgres as the ledger writer writes it. */
async function positions(userId: string, authorizationId: string) {
  await drainOutbox(redis, shared.database.sql, services.prefix);
  const keys = userKeys(services.prefix, userId);
  const [account] = await shared.database.sql<{ holds_cents: string }[]>`
    select holds_cents::text from credit_accounts where user_id = ${userId}`;
  const [auth] = await shared.database.sql<{ held_cents: string }[]>`
    select held_cents::text from authorizations where id = ${authorizationId}`;
  return {
    redisHold: await redis.hget(keys.account, 'hold'),
    redisAuthHold: (await redis.hget(keys.holds, authorizationId)) ?? '0',
    postgresHold: account?.holds_cents,
    postgresAuthHold: auth?.held_cents,
    problems: await conservationProblems(shared.database.sql, redis, services.prefix, [userId]),
  };
}

const heldEverywhere = (cents: string) => ({
  redisHold: cents,
  redisAuthHold: cents,
  postgresHold: cents,
  postgresAuthHold: cents,
  problems: [],
});

describe('a Redis attempt that runs after Stripe had its answer', () => {
  it("reserves nothing once Stripe's created for its request was applied first (bug 6, seed 17)", async () => {
    const { userId, cardId } = await warmUser();
    // A healthy peer decides from Redis (a live lease): this process's fallback declines, fenced, as
    // hot-path-1's lease fenced hot-path-0 in seed 17.
    await shared.database.sql`insert into redis_deciders (holder, expires_at, renewed_at)
      values ('late-attempt-peer', now() + interval '1 hour', now())`;
    try {
      const request = authorizationRequest({ cardId, amountCents: 5_000 });
      const authorizationId = request.data.object.id;
      expect(await decideStalled(request)).toMatchObject({
        approved: false,
        metadata: { reason: 'system_unavailable' },
      });
      // Stripe declined it and says so; the peer applies that while the DECIDE is still in the socket.
      await stripe(
        peer,
        authorizationEvent({
          type: 'issuing_authorization.created',
          cardId,
          authorizationId,
          amountCents: 0,
          approved: false,
          status: 'pending',
          requestHistory: 1,
          createdS: request.created,
        }),
      );
      // Recorded as the decline Stripe was told, so a replay would get that answer too.
      expect(await resumeUntilDecided(userId, request.id)).toMatch(/^0\|0\|system_unavailable\|/);
      expect(await positions(userId, authorizationId)).toEqual(heldEverywhere('0'));
    } finally {
      proxy.resume();
      await shared.database.sql`delete from redis_deciders where holder = 'late-attempt-peer'`;
    }
  });
});

describe('a Redis attempt that runs after its fallback granted less (bug 5, seed 16)', () => {
  /**
   * The fallback grants the cap (a partial approval, which Stripe is told); the late attempt then
   * approves the whole 5,000 in Redis under the same decision id.
   */
  async function lateBesideFallback() {
    const { userId, cardId } = await warmUser();
    const request = authorizationRequest({ cardId, amountCents: 5_000, controllable: true });
    const answer = await decideStalled(request);
    expect(answer).toMatchObject({ approved: true, amount: FALLBACK_CAP, metadata: { reason: 'partial' } });
    const decisionId = answer.metadata?.decision_id;
    expect(await resumeUntilDecided(userId, request.id)).toBe(`1|5000|approved|${decisionId}`);
    const created = authorizationEvent({
      type: 'issuing_authorization.created',
      cardId,
      authorizationId: request.data.object.id,
      amountCents: FALLBACK_CAP,
      approved: true,
      status: 'pending',
      requestHistory: 1,
      createdS: request.created,
    });
    return { userId, authorizationId: request.data.object.id, created };
  }

  it("keeps Postgres in step when Stripe's created is applied cut off from Postgres before the adoption", async () => {
    const { userId, authorizationId, created } = await lateBesideFallback();
    // The event sets the hold to Stripe's 1,000 against the 5,000 Redis holds: a release of 4,000 that
    // Postgres, which has the fallback's 1,000 and not the late attempt, must be able to book.
    await stripe(cutOff, created);
    expect(await positions(userId, authorizationId)).toEqual(heldEverywhere(String(FALLBACK_CAP)));
    // The adoption then finds Stripe's word applied ('settled') and both books already agree.
    expect(await hotPath.engine.lease.catchUp()).toBe(true);
    expect(await positions(userId, authorizationId)).toEqual(heldEverywhere(String(FALLBACK_CAP)));
  });

  it("keeps Postgres in step when the late attempt runs after Stripe's created, applied cut off from Postgres", async () => {
    const { userId, cardId } = await warmUser();
    const request = authorizationRequest({ cardId, amountCents: 5_000, controllable: true });
    const authorizationId = request.data.object.id;
    expect(await decideStalled(request)).toMatchObject({ approved: true, amount: FALLBACK_CAP });
    // The event holds Stripe's 1,000 in Redis (Postgres books it on top of the fallback's 1,000) …
    await stripe(
      cutOff,
      authorizationEvent({
        type: 'issuing_authorization.created',
        cardId,
        authorizationId,
        amountCents: FALLBACK_CAP,
        approved: true,
        status: 'pending',
        requestHistory: 1,
        createdS: request.created,
      }),
    );
    // … and the late attempt, too late, reserves nothing: a decline under the fallback's decision id,
    // which Postgres follows (−1,000), so the books agree before the adoption and after it.
    expect(await resumeUntilDecided(userId, request.id)).toMatch(/^0\|0\|system_unavailable\|/);
    expect(await positions(userId, authorizationId)).toEqual(heldEverywhere(String(FALLBACK_CAP)));
    expect(await hotPath.engine.lease.catchUp()).toBe(true);
    expect(await positions(userId, authorizationId)).toEqual(heldEverywhere(String(FALLBACK_CAP)));
  });

  it('stops the hold at zero in both books when a capture beyond the fallback grant came before the adoption', async () => {
    const { userId, authorizationId, created } = await lateBesideFallback();
    // Stripe captures 3,000 on its 1,000 authorization (an over-capture); Redis takes it out of the late
    // 5,000 (2,000 left), and so does Postgres, which followed the late grant.
    const capture = transactionEvent({
      cardId: created.data.object.card.id,
      authorizationId,
      type: 'capture',
      amountCents: 3_000,
      createdS: created.created + 1,
    });
    expect((await cutOff.apply(lifecycleEvent.parse(capture), JSON.stringify(capture))).applied).toBe(true);
    // Captures alone do not settle: the adoption replaces the late 5,000 by the fallback's 1,000, which
    // would leave −2,000 held; it stops at zero, in both books.
    expect(await hotPath.engine.lease.catchUp()).toBe(true);
    expect(await positions(userId, authorizationId)).toEqual(heldEverywhere('0'));
  });

  it('keeps Postgres in step when the adoption replaces the late grant before any event', async () => {
    const { userId, authorizationId, created } = await lateBesideFallback();
    expect(await hotPath.engine.lease.catchUp()).toBe(true);
    expect(await positions(userId, authorizationId)).toEqual(heldEverywhere(String(FALLBACK_CAP)));
    await stripe(peer, created);
    expect(await positions(userId, authorizationId)).toEqual(heldEverywhere(String(FALLBACK_CAP)));
  });
});
