// Proves the Supabase → financial bridge on real Postgres and Redis: a sign-up creates the profile, controls and financial user; card controls reach Postgres and then Redis within 1 s; changes made while the bridge is down are applied on start; a standby bridge applies nothing until it holds the lock.
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureAccount } from '../../shared/redis/account.ts';
import { ACCOUNT, userKeys } from '../../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import {
  asCaller,
  createSupabaseTestDatabase,
  type SupabaseTestDatabase,
  signUp,
  userCaller,
  waitFor,
} from '../tests/harness.ts';
import { defaultSyncLimits } from './limits.ts';
import { createSyncMetrics } from './metrics.ts';
import { createUserBridge, type UserBridge } from './user-bridge.ts';

const silent = { info() {}, warn() {}, error() {} };
const DEFAULTS = {
  creditLimitCents: 2_500_000n,
  dailyLimitCents: 500_000n,
  dailyLimitCeilingCents: 1_000_000n,
  dailyLimitIncreaseCooldownS: 86_400,
};

let services: TestServices;
let sb: SupabaseTestDatabase;
let bridgeSql: postgres.Sql;
const bridges: UserBridge[] = [];

function newBridge(): UserBridge {
  const bridge = createUserBridge({
    supabase: bridgeSql,
    financial: services.sqlFor('credana_supabase_sync'),
    redis: services.redis,
    redisPrefix: services.prefix,
    defaults: DEFAULTS,
    limits: { ...defaultSyncLimits, bridgeLockRetryMs: 50, bridgePollIntervalMs: 60_000 },
    metrics: createSyncMetrics(),
    logger: silent,
  });
  bridges.push(bridge);
  return bridge;
}

async function financialUser(userId: string) {
  const [row] = await services.database.sql<
    { credit_limit_cents: string; daily_limit_cents: string; blocked_mccs: string[] }[]
  >`select credit_limit_cents, daily_limit_cents, blocked_mccs from users where id = ${userId}`;
  return row;
}

async function financialPending(userId: string): Promise<string | null | undefined> {
  const [row] = await services.database.sql<{ pending: string | null }[]>`
    select daily_limit_pending_cents::text as pending from users where id = ${userId}`;
  return row?.pending;
}

async function cachedCard(userId: string, cardId: string): Promise<string | null> {
  return services.redis.hget(userKeys(services.prefix, userId).cards, cardId);
}

/** A signed-up user, bridged, with one active card in the financial database and a cached account. */
async function bridgedUserWithCard(): Promise<{ userId: string; cardId: string }> {
  const userId = await signUp(sb.sql);
  await waitFor(() => financialUser(userId), 2_000);
  const cardId = `ic_${userId.slice(0, 8)}`;
  await services.database
    .sql`insert into cards (id, user_id, status) values (${cardId}, ${userId}, 'active')`;
  await ensureAccount(services.redis, services.database.sql, services.prefix, userId);
  expect(await cachedCard(userId, cardId)).toBe('active|0');
  return { userId, cardId };
}

async function setControls(userId: string, set: string): Promise<void> {
  await asCaller(
    sb.sql,
    userCaller(userId),
    (tx) => tx.unsafe(`update public.card_controls set ${set} where user_id = '${userId}'`),
    { commit: true },
  );
}

beforeAll(async () => {
  services = await setUpServices();
  sb = await createSupabaseTestDatabase();
  bridgeSql = postgres(sb.url, { max: 4, onnotice: () => {} });
  await newBridge().start();
});

afterAll(async () => {
  for (const bridge of bridges) await bridge.stop();
  await bridgeSql?.end({ timeout: 5 });
  await sb?.close();
  await services?.close();
});

describe('sign-up', () => {
  it('creates the profile and default controls in the same transaction, and the financial user with the same id', async () => {
    const userId = await signUp(sb.sql, {
      email: 'new@example.test',
      userMetadata: { display_name: ` ${'N'.repeat(90)} ` },
    });
    const [profile] =
      await sb.sql`select email, display_name, kyc_status from public.profiles where id = ${userId}`;
    expect(profile).toEqual({ email: 'new@example.test', display_name: 'N'.repeat(80), kyc_status: 'none' });
    const [controls] =
      await sb.sql`select frozen, daily_limit_cents, blocked_mccs from public.card_controls where user_id = ${userId}`;
    expect(controls).toEqual({ frozen: false, daily_limit_cents: null, blocked_mccs: [] });
    const user = await waitFor(() => financialUser(userId), 1_000);
    expect(user).toEqual({ credit_limit_cents: '2500000', daily_limit_cents: '500000', blocked_mccs: [] });
    const audit = await services.database.sql`select action from audit_log where entity_id = ${userId}`;
    expect(audit.map((r) => r['action'])).toEqual(['user.created']);
    await waitFor(async () => {
      const [row] = await sb.sql`select count(*)::int as n from credana_sync.outbox`;
      return row?.['n'] === 0 ? true : undefined;
    }, 1_000);
  });

  it('keeps the profile email in step with auth.users', async () => {
    const userId = await signUp(sb.sql, { email: 'before@example.test' });
    await sb.sql`update auth.users set email = 'after@example.test' where id = ${userId}`;
    const [profile] = await sb.sql`select email from public.profiles where id = ${userId}`;
    expect(profile?.['email']).toBe('after@example.test');
  });
});

describe('card controls', () => {
  it('freezes within 1 s: financial Postgres first, then the cached card; unfreezing likewise', async () => {
    const { userId, cardId } = await bridgedUserWithCard();
    for (const [frozen, cached] of [
      [true, 'active|1'],
      [false, 'active|0'],
    ] as const) {
      const startedAt = performance.now();
      await setControls(userId, `frozen = ${frozen}`);
      await waitFor(async () => ((await cachedCard(userId, cardId)) === cached ? true : undefined), 1_000, 2);
      const elapsedMs = performance.now() - startedAt;
      expect(elapsedMs).toBeLessThan(1_000);
      const [card] = await services.database.sql`select frozen from cards where id = ${cardId}`;
      expect(card?.['frozen']).toBe(frozen);
    }
  });

  it('applies the daily limit and blocked merchant categories to Postgres and Redis, and a rebuilt cache agrees', async () => {
    const { userId, cardId } = await bridgedUserWithCard();
    const account = userKeys(services.prefix, userId).account;
    await setControls(userId, `daily_limit_cents = 12345, blocked_mccs = '{7995,5933}', frozen = true`);
    await waitFor(
      async () =>
        (await services.redis.hget(account, ACCOUNT.dailyLimitCents)) === '12345' ? true : undefined,
      1_000,
    );
    expect(await services.redis.hget(account, ACCOUNT.blockedMccs)).toBe('7995,5933');
    expect(await financialUser(userId)).toMatchObject({
      daily_limit_cents: '12345',
      blocked_mccs: ['7995', '5933'],
    });
    // Back to the program default when the user clears their own limit: an increase, so it waits
    // out the cool-down (DEFAULTS: a day) while the lower limit stays in force.
    await setControls(userId, 'daily_limit_cents = null');
    await waitFor(async () => ((await financialPending(userId)) === '500000' ? true : undefined), 1_000);
    expect(await services.redis.hget(account, ACCOUNT.dailyLimitCents)).toBe('12345');
    // Drop the cache and rebuild it from Postgres: the same controls come back.
    const keys = userKeys(services.prefix, userId);
    await services.redis.del(keys.account, keys.cards);
    await ensureAccount(services.redis, services.database.sql, services.prefix, userId);
    expect(await services.redis.hget(account, ACCOUNT.dailyLimitCents)).toBe('12345');
    expect(await services.redis.hget(account, ACCOUNT.blockedMccs)).toBe('7995,5933');
    expect(await cachedCard(userId, cardId)).toBe('active|1');
  });

  it('applies a daily limit increase on the drain after its cool-down ends, capped by the ceiling', async () => {
    const { userId } = await bridgedUserWithCard();
    const account = userKeys(services.prefix, userId).account;
    await setControls(userId, 'daily_limit_cents = 100000000');
    await waitFor(async () => ((await financialPending(userId)) === '100000000' ? true : undefined), 1_000);
    expect(await services.redis.hget(account, ACCOUNT.dailyLimitCents)).toBe('500000');
    // The cool-down (a day in DEFAULTS) has run out.
    await services.database
      .sql`update users set daily_limit_pending_at = now() - interval '1 second' where id = ${userId}`;
    // The next drain (here called at once; the bridge runs one at least every bridgePollIntervalMs)
    // applies it. A drain the bridge was running by itself may have got there first: both are fine.
    const leader = bridges.find((b) => b.isLeader());
    await leader!.drain();
    expect(await services.redis.hget(account, ACCOUNT.dailyLimitCents)).toBe('1000000');
    expect(await financialPending(userId)).toBe(null);
  });

  it("runs as a role that cannot write the program's controls", async () => {
    const { userId, cardId } = await bridgedUserWithCard();
    const url = new URL(services.databaseUrl);
    url.username = 'credana_supabase_sync';
    const asBridge = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      for (const statement of [
        `update users set status = 'active' where id = '${userId}'`,
        `update users set credit_limit_cents = 1 where id = '${userId}'`,
        `update users set daily_limit_ceiling_cents = 1 where id = '${userId}'`,
        `update cards set ops_frozen = false where id = '${cardId}'`,
      ]) {
        await expect(asBridge.unsafe(statement), statement).rejects.toThrow(/permission denied/);
      }
      await asBridge.unsafe(`update cards set frozen = false where id = '${cardId}'`);
    } finally {
      await asBridge.end({ timeout: 5 });
    }
  });

  it('writes nothing for an update that changes no control', async () => {
    const { userId } = await bridgedUserWithCard();
    await setControls(userId, 'frozen = frozen');
    const [row] =
      await sb.sql`select count(*)::int as n, max(0) from credana_sync.outbox where user_id = ${userId}`;
    expect(row?.['n']).toBe(0);
    const [controls] =
      await sb.sql`select version::int as v from public.card_controls where user_id = ${userId}`;
    expect(controls?.['v']).toBe(1);
  });
});

describe('resilience', () => {
  it('applies sign-ups and freezes made while no bridge ran, on start', async () => {
    for (const bridge of bridges.splice(0)) await bridge.stop();
    const { userId, cardId } = await (async () => {
      // Bridge down: a user signs up, gets a card (Stripe) and freezes it.
      const id = await signUp(sb.sql);
      await setControls(id, 'frozen = true');
      return { userId: id, cardId: `ic_${id.slice(0, 8)}` };
    })();
    expect(await financialUser(userId)).toBeUndefined();
    const bridge = newBridge();
    await bridge.start();
    await waitFor(() => financialUser(userId), 1_000);
    await services.database
      .sql`insert into cards (id, user_id, status) values (${cardId}, ${userId}, 'active')`;
    // The card came after the freeze; re-applying the controls (any later change, or a rebuild) covers it.
    await setControls(userId, "blocked_mccs = blocked_mccs || array['7995']");
    await waitFor(async () => {
      const [card] = await services.database.sql`select frozen from cards where id = ${cardId}`;
      return card?.['frozen'] === true ? true : undefined;
    }, 1_000);
  });

  it('lets only the lock holder apply; a standby takes over when the leader stops', async () => {
    const [leader] = bridges;
    expect(leader?.isLeader()).toBe(true);
    const standby = newBridge();
    await standby.start();
    expect(standby.isLeader()).toBe(false);
    await expect(standby.drain()).rejects.toThrow(/without the lock/);
    await leader?.stop();
    bridges.splice(bridges.indexOf(leader!), 1);
    await waitFor(async () => (standby.isLeader() ? true : undefined), 2_000);
    const userId = await signUp(sb.sql);
    await waitFor(() => financialUser(userId), 1_000);
  });
});
