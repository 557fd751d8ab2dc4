// Proves that a Postgres fallback grant and Stripe's lifecycle events of its authorization end where
// Stripe says, in Redis and in Postgres, in either order (chaos bug 2, docs/chaos.md): a lifecycle event
// adopts its authorization's pending grant first; and when it could not (Postgres away), the adoption
// that follows respects what the events already did — whichever process adopts and however often. On
// real Redis and Postgres, with the ledger writer's own apply for the outbox.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../shared/db/client.ts';
import type { FallbackGrant } from '../../shared/lifecycle/adoption.ts';
import { createLifecycle, type Lifecycle } from '../../shared/lifecycle/handler.ts';
import { ensureAccount } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { createMarket, type Market } from '../../shared/redis/market.ts';
import { authorizationRequestEvent, lifecycleEvent } from '../../shared/stripe/events.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import { connectRedis, type TestServices } from '../../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { setUpServicesWithWeth, testConfig, WETH_PRICE_E8 } from '../../test/support/hot-path.ts';
import { freePort } from '../../test/support/processes.ts';
import { drainOutbox, loseUserData } from '../../test/support/reconcile.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from '../../test/support/stripe.ts';
import { newDecisionId } from './engine.ts';
import { decideFromPostgres } from './postgres-fallback.ts';
import { createRedisLease } from './redis-lease.ts';

let services: TestServices;
let market: Market;
let subscriber: Redis;
let lifecycle: Lifecycle;
/** The lifecycle of a process that reaches Redis but not Postgres (nothing listens on its port). */
let cutOff: Lifecycle;
let unreachable: Database;

beforeAll(async () => {
  services = await setUpServicesWithWeth();
  subscriber = connectRedis(services, { shardedSubscriber: true });
  market = await createMarket(services.redis, subscriber, services.prefix);
  lifecycle = createLifecycle({
    redis: services.redis,
    sql: services.database.sql,
    settings: testConfig(services),
  });
  unreachable = createDatabase({
    url: `postgres://postgres@127.0.0.1:${await freePort()}/none`,
    connectTimeoutS: 1,
  });
  cutOff = createLifecycle({ redis: services.redis, sql: unreachable.sql, settings: testConfig(services) });
});

afterAll(async () => {
  await unreachable?.close();
  market?.close();
  subscriber?.disconnect();
  await services?.close();
});

const lease = (name: string) =>
  createRedisLease({
    sql: services.database.sql,
    redis: services.redis,
    prefix: services.prefix,
    leaseMs: 1_000,
    holder: `${name}-${Math.random().toString(36).slice(2)}`,
  });

/** A user with plenty of credit, cached in Redis, and one authorization id for the scenario. */
async function world() {
  const { userId, cardId } = await seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
  });
  await ensureAccount(services.redis, services.database.sql, services.prefix, userId, Date.now());
  const authorizationId = `iauth_${Math.random().toString(36).slice(2)}`;
  const t = Math.floor(Date.now() / 1000);
  return { userId, cardId, authorizationId, t };
}

/** The fallback decides a request (Redis is not asked); returns the grant to adopt. */
async function fallbackGrant(
  cardId: string,
  authorizationId: string,
  amountCents: number,
  options: { requestHistory?: number; createdS?: number } = {},
): Promise<FallbackGrant> {
  const raw = authorizationRequest({ cardId, authorizationId, amountCents, ...options });
  const event = authorizationRequestEvent.parse(raw);
  const startedAtMs = Date.now();
  const result = await decideFromPostgres(
    {
      sql: services.database.sql,
      market,
      settings: testConfig(services),
      now: Date.now,
      holder: 'adoption-test',
    },
    event,
    JSON.stringify(raw),
    newDecisionId(startedAtMs),
    startedAtMs,
    startedAtMs + 5_000,
  );
  expect(result.decision).toMatchObject({ approved: true, amountCents: BigInt(amountCents) });
  return result.grant!;
}

async function stripe(by: Lifecycle, event: unknown) {
  const parsed = lifecycleEvent.parse(event);
  const result = await by.apply(parsed, JSON.stringify(event));
  expect(result.applied).toBe(true);
}

/** Adopts like a process that made the grant itself (from memory, no Postgres). */
async function adoptOwn(grant: FallbackGrant) {
  const own = lease('own');
  own.remember(grant);
  await own.adoptOwn(grant.userId);
}

/** Adopts like any other process on (re)acquiring its lease: every pending row, read from Postgres. */
async function adoptFromPostgres() {
  const other = lease('other');
  expect(await other.catchUp()).toBe(true);
  await other.stop();
}

/** Whether the grant's row is marked adopted (a lifecycle event that reached Postgres adopted it). */
async function adoptedYet(grant: FallbackGrant): Promise<boolean> {
  const [row] = await services.database.sql<{ adopted: boolean }[]>`
    select adopted_at is not null as adopted from fallback_decisions where decision_id = ${grant.decisionId}`;
  return row?.adopted ?? false;
}

async function positions(userId: string, authorizationId: string) {
  await drainOutbox(services.redis, services.database.sql, services.prefix);
  const keys = userKeys(services.prefix, userId);
  const [account] = await services.database.sql<{ holds_cents: string; unsettled_cents: string }[]>`
    select holds_cents::text, unsettled_cents::text from credit_accounts where user_id = ${userId}`;
  const [auth] = await services.database.sql<{ held_cents: string }[]>`
    select held_cents::text from authorizations where id = ${authorizationId}`;
  return {
    redisHold: await services.redis.hget(keys.account, 'hold'),
    redisAuthHold: (await services.redis.hget(keys.holds, authorizationId)) ?? '0',
    redisUnsettled: await services.redis.hget(keys.account, 'uns'),
    postgresHold: account?.holds_cents,
    postgresAuthHold: auth?.held_cents,
    postgresUnsettled: account?.unsettled_cents,
    problems: await conservationProblems(services.database.sql, services.redis, services.prefix, [userId]),
  };
}

const settledTo = (hold: string, unsettled = '0') => ({
  redisHold: hold,
  redisAuthHold: hold,
  redisUnsettled: unsettled,
  postgresHold: hold,
  postgresAuthHold: hold,
  postgresUnsettled: unsettled,
  problems: [],
});

// With Postgres, the event adopts the grant before it applies; cut off from it, the event applies alone
// and the adoption afterwards must not add what the event already settled ('settled').
describe.each([
  ['a process that reaches Postgres', () => lifecycle],
  ['a process cut off from Postgres', () => cutOff],
])('Stripe settles a fallback grant before its adoption, the events applied by %s', (_, by) => {
  it('adds no hold for an authorization Stripe created and reversed before the adoption', async () => {
    const { userId, cardId, authorizationId: A, t } = await world();
    const grant = await fallbackGrant(cardId, A, 5_000, { createdS: t });
    const auth = { cardId, authorizationId: A, amountCents: 5_000, approved: true, requestHistory: 1 };
    await stripe(
      by(),
      authorizationEvent({ ...auth, type: 'issuing_authorization.created', status: 'pending', createdS: t }),
    );
    await stripe(
      by(),
      authorizationEvent({
        ...auth,
        type: 'issuing_authorization.updated',
        status: 'reversed',
        createdS: t + 1,
      }),
    );
    await drainOutbox(services.redis, services.database.sql, services.prefix);
    expect(await adoptedYet(grant)).toBe(by() === lifecycle);
    await adoptOwn(grant);
    expect(await positions(userId, A)).toEqual(settledTo('0'));
  });

  it('adds no hold for an authorization captured and closed before the adoption, read from Postgres', async () => {
    const { userId, cardId, authorizationId: A, t } = await world();
    const grant = await fallbackGrant(cardId, A, 5_000, { createdS: t });
    const auth = { cardId, authorizationId: A, amountCents: 5_000, approved: true, requestHistory: 1 };
    await stripe(
      by(),
      authorizationEvent({ ...auth, type: 'issuing_authorization.created', status: 'pending', createdS: t }),
    );
    await stripe(
      by(),
      transactionEvent({ cardId, authorizationId: A, type: 'capture', amountCents: 5_000, createdS: t + 1 }),
    );
    await stripe(
      by(),
      authorizationEvent({
        ...auth,
        type: 'issuing_authorization.updated',
        status: 'closed',
        createdS: t + 2,
      }),
    );
    expect(await adoptedYet(grant)).toBe(by() === lifecycle);
    await adoptFromPostgres();
    expect(grant.grantedCents).toBe(5_000n);
    expect(await positions(userId, A)).toEqual(settledTo('0', '5000'));
  });

  it('counts the hold once when Stripe created it before the adoption, adopted twice by two processes', async () => {
    const { userId, cardId, authorizationId: A, t } = await world();
    const grant = await fallbackGrant(cardId, A, 5_000, { createdS: t });
    await stripe(
      by(),
      authorizationEvent({
        cardId,
        authorizationId: A,
        amountCents: 5_000,
        approved: true,
        requestHistory: 1,
        type: 'issuing_authorization.created',
        status: 'pending',
        createdS: t,
      }),
    );
    expect(await adoptedYet(grant)).toBe(by() === lifecycle);
    // Another process first, from the row (the request's version is read from the stored event),
    // then the deciding process from memory, then another again.
    await adoptFromPostgres();
    await adoptOwn(grant);
    await adoptFromPostgres();
    expect(await positions(userId, A)).toEqual(settledTo('5000'));
  });
});

describe('adopting a fallback grant before Stripe settled it', () => {
  it('holds the grant, and its capture then turns it into unsettled debt', async () => {
    const { userId, cardId, authorizationId: A, t } = await world();
    const grant = await fallbackGrant(cardId, A, 5_000, { createdS: t });
    await adoptOwn(grant);
    await adoptFromPostgres();
    expect(await positions(userId, A)).toEqual(settledTo('5000'));
    const auth = { cardId, authorizationId: A, amountCents: 5_000, approved: true, requestHistory: 1 };
    await stripe(
      lifecycle,
      authorizationEvent({ ...auth, type: 'issuing_authorization.created', status: 'pending', createdS: t }),
    );
    await stripe(
      lifecycle,
      transactionEvent({ cardId, authorizationId: A, type: 'capture', amountCents: 5_000, createdS: t + 1 }),
    );
    expect(await positions(userId, A)).toEqual(settledTo('0', '5000'));
  });

  it("adds an increment whose request Stripe's events do not cover yet, even after the authorization's created", async () => {
    const { userId, cardId, authorizationId: A, t } = await world();
    const auth = {
      cardId,
      authorizationId: A,
      approved: true,
      type: 'issuing_authorization.updated',
    } as const;
    // Stripe approved the first 3,000 on its own (stand-in); the fallback then grants a 2,000 increment.
    await stripe(
      lifecycle,
      authorizationEvent({
        ...auth,
        type: 'issuing_authorization.created',
        amountCents: 3_000,
        requestHistory: 1,
        status: 'pending',
        createdS: t,
      }),
    );
    const grant = await fallbackGrant(cardId, A, 2_000, { requestHistory: 1, createdS: t + 1 });
    await adoptFromPostgres();
    await adoptOwn(grant);
    expect(await positions(userId, A)).toEqual(settledTo('5000'));
    // Stripe's word on the increment leaves it as it is.
    await stripe(
      lifecycle,
      authorizationEvent({
        ...auth,
        amountCents: 5_000,
        requestHistory: 2,
        status: 'pending',
        createdS: t + 2,
      }),
    );
    expect(await positions(userId, A)).toEqual(settledTo('5000'));
  });
});

// Redis restarted empty while the fallback decided (chaos bug 10, docs/chaos.md): the account is rebuilt
// from Postgres, which has the grant's hold already; the adoption that follows must not add it again,
// or Stripe's events, which set the hold to what Stripe says, take the excess out of Postgres too.
describe('Redis lost its data', () => {
  it.each([
    ['adopted by a lifecycle event', 'event'],
    ['adopted by a lease catch-up', 'catch-up'],
  ])('holds it once in Redis and in Postgres after the rebuild, %s', async (_, adoptBy) => {
    const { userId, cardId, authorizationId: A, t } = await world();
    const grant = await fallbackGrant(cardId, A, 5_000, { createdS: t });
    await loseUserData(services.redis, services.database.sql, services.prefix, userId);
    await ensureAccount(services.redis, services.database.sql, services.prefix, userId, Date.now());
    if (adoptBy === 'catch-up') await adoptFromPostgres();
    const auth = { cardId, authorizationId: A, amountCents: 5_000, approved: true, requestHistory: 1 };
    await stripe(
      lifecycle,
      authorizationEvent({ ...auth, type: 'issuing_authorization.created', status: 'pending', createdS: t }),
    );
    await adoptOwn(grant);
    expect(await positions(userId, A)).toEqual(settledTo('5000'));
    await stripe(
      lifecycle,
      authorizationEvent({
        ...auth,
        type: 'issuing_authorization.updated',
        status: 'expired',
        createdS: t + 1,
      }),
    );
    expect(await positions(userId, A)).toEqual(settledTo('0'));
  });

  // Stripe sends an event again (a retry, a duplicate) after the loss took its applied marker: Postgres
  // booked it before the loss, and the account rebuilt from Postgres has its effect (chaos item 12).
  it('does not apply again an event Postgres booked before the loss', async () => {
    const { userId, cardId, authorizationId: A, t } = await world();
    const auth = { cardId, authorizationId: A, amountCents: 5_000, approved: true, requestHistory: 1 };
    await fallbackGrant(cardId, A, 5_000, { createdS: t });
    await stripe(
      lifecycle,
      authorizationEvent({ ...auth, type: 'issuing_authorization.created', status: 'pending', createdS: t }),
    );
    const capture = transactionEvent({
      cardId,
      authorizationId: A,
      type: 'capture',
      amountCents: 3_000,
      createdS: t + 1,
    });
    await stripe(lifecycle, capture);
    const closed = authorizationEvent({
      ...auth,
      type: 'issuing_authorization.updated',
      status: 'closed',
      createdS: t + 2,
    });
    await stripe(lifecycle, closed);
    expect(await positions(userId, A)).toEqual(settledTo('0', '3000'));
    await loseUserData(services.redis, services.database.sql, services.prefix, userId);
    await ensureAccount(services.redis, services.database.sql, services.prefix, userId, Date.now());
    const applied: boolean[] = [];
    for (const again of [capture, closed])
      applied.push((await lifecycle.apply(lifecycleEvent.parse(again), JSON.stringify(again))).applied);
    expect(await positions(userId, A)).toEqual(settledTo('0', '3000'));
    expect(applied).toEqual([false, false]);
  });
});
