// Proves the cache job finds drift injected into Redis and repairs it from Postgres, defers users whose outbox entries are not yet written, never hands back holds Redis has and Postgres lacks, alerts above its threshold, records each run and resumes from its cursor — on real Postgres and Redis with the real hot path.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureAccount } from '../shared/redis/account.ts';
import { shardOf, userKeys } from '../shared/redis/keys.ts';
import type { TestServices } from '../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../test/support/fixtures.ts';
import {
  type HotPath,
  type HotPathWorld,
  post,
  setUpHotPathWorld,
  WETH_PRICE_E8,
} from '../test/support/hot-path.ts';
import { drainOutbox } from '../test/support/reconcile.ts';
import { authorizationRequest, newUserId } from '../test/support/stripe.ts';
import { cacheJob } from './cache.ts';
import { readCachedAccount, rebuildFromPostgres } from './cache-state.ts';
import { createReconcileMetrics } from './metrics.ts';
import { runRecorded } from './runs.ts';

const PRICE = WETH_PRICE_E8;
let services: TestServices;
let hotPath: HotPath;

let world: HotPathWorld;

beforeAll(async () => {
  world = await setUpHotPathWorld({ VELOCITY_LIMIT_PER_MIN: '1000' });
  ({ services, hotPath } = world);
});

afterAll(async () => {
  await world?.close();
});

async function userWithHold(amountCents: number, userId?: string) {
  const user = await seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
    ...(userId === undefined ? {} : { userId }),
  });
  const res = await post(
    hotPath,
    '/stripe/authorizations',
    authorizationRequest({ cardId: user.cardId, amountCents }),
  );
  expect(res.json.approved).toBe(true);
  // Decided in Redis (not by the Postgres fallback): the account is cached and the entry is in the outbox.
  expect(await services.redis.exists(userKeys(services.prefix, user.userId).account)).toBe(1);
  return user;
}

/** The outbox record (field `r`) of a stream entry's flat field list. */
function recordOf(fields: string[]): { userId?: string } {
  return JSON.parse(fields[fields.indexOf('r') + 1] ?? '{}') as { userId?: string };
}

/** A new user id whose outbox shard is `shard`. */
function userIdInShard(shard: number): string {
  for (;;) {
    const id = newUserId();
    if (shardOf(id) === shard) return id;
  }
}

const run = (options: Partial<Parameters<typeof cacheJob>[0]> = {}, metrics = createReconcileMetrics()) =>
  runRecorded(
    { sql: services.sqlFor('credana_reconciliation'), metrics },
    'cache',
    cacheJob({ redis: services.redis, prefix: services.prefix, ...options }),
  );

describe('cache job', () => {
  it('repairs drift of drained users, defers pending ones, reports holds Redis has ahead, and is idempotent', async () => {
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const a = await userWithHold(1_500);
    await drainOutbox(redis, sql, prefix);
    const b = await userWithHold(2_500); // its entry stays in the outbox: B is not drained
    // C shares B's outbox shard (one stream for both), as any two users do one time in sixteen: B's
    // pending entry must keep B deferred without making C look pending.
    const c = await userWithHold(700, userIdInShard(shardOf(b.userId)));
    // C's entry must be written before we add a hold only Redis knows; B's must stay pending. The
    // stream is the shard's, so it holds C's entry too: only B's own entry goes back.
    const bKeys = userKeys(prefix, b.userId);
    const pendingB = (await redis.xrange(bKeys.outbox, '-', '+')).filter(
      ([, fields]) => recordOf(fields).userId === b.userId,
    );
    expect(pendingB).toHaveLength(1);
    await drainOutbox(redis, sql, prefix);
    for (const [, fields] of pendingB) await redis.xadd(bKeys.outbox, '*', ...fields);

    const aKeys = userKeys(prefix, a.userId);
    await redis.hset(aKeys.account, 'uns', '99999', 'lim', '1', 'c:WETH', '5');
    await redis.hset(bKeys.account, 'uns', '424242');
    const cKeys = userKeys(prefix, c.userId);
    await redis.hset(cKeys.holds, 'iauth_ghost', '300');
    await redis.hincrby(cKeys.account, 'hold', 300);

    const metrics = createReconcileMetrics();
    const first = await run({}, metrics);
    expect(first.status).toBe('findings');
    const byKind = (kind: string) => first.findings.filter((f) => f.kind === kind);
    expect(byKind('cache_drift').map((f) => f['userId'])).toEqual([a.userId]);
    expect(byKind('cache_drift')[0]?.['repaired']).toBe(true);
    expect(byKind('cache_drift')[0]?.['fields']).toEqual(
      expect.arrayContaining([
        expect.stringContaining('uns: redis=99999 postgres=0'),
        expect.stringContaining('lim: redis=1'),
      ]),
    );
    // C missing here was the flake: it shared B's shard (1 in 16 of runs) and its entry went back with B's.
    const [cDecision] = await sql`select source, approved_cents from decisions where user_id = ${c.userId}`;
    expect(
      byKind('cache_holds_ahead_of_postgres').map((f) => [f['userId'], f['repaired']]),
      JSON.stringify({ findings: first.findings, cDecision, c: c.userId, b: b.userId }),
    ).toEqual([[c.userId, false]]);
    expect(byKind('users_deferred')).toEqual([{ kind: 'users_deferred', count: 1 }]);
    expect(first.repairs).toBe(1);

    // A is back to Postgres's values, its hold intact; B and C untouched.
    expect(await redis.hmget(aKeys.account, 'uns', 'lim', 'c:WETH', 'hold')).toEqual([
      '0',
      '10000000',
      wethForBorrowPower(100_000n, PRICE).toString(),
      '1500',
    ]);
    expect(await redis.hlen(aKeys.holds)).toBe(1);
    expect(await redis.hget(bKeys.account, 'uns')).toBe('424242');
    expect(await redis.hget(cKeys.holds, 'iauth_ghost')).toBe('300');

    // The run row and the metrics say the same.
    const [row] = await sql<
      { status: string; repairs: number; checked: number; n: number; cursor: string | null }[]
    >`
      select status, repairs, checked, jsonb_array_length(findings) as n, cursor from reconciliation_runs where id = ${first.runId}`;
    expect(row).toEqual({
      status: 'findings',
      repairs: 1,
      checked: 3,
      n: first.findings.length,
      cursor: null,
    });
    expect(await metrics.registry.getSingleMetricAsString('credana_reconciliation_repairs_total')).toContain(
      'credana_reconciliation_repairs_total{job="cache"} 1',
    );

    // Once B's entry is written, its drift is found and repaired.
    await drainOutbox(redis, sql, prefix);
    const second = await run();
    expect(second.findings.filter((f) => f.kind === 'cache_drift').map((f) => f['userId'])).toEqual([
      b.userId,
    ]);
    expect(await redis.hget(bKeys.account, 'uns')).toBe('0');
    expect(await redis.hget(bKeys.account, 'hold')).toBe('2500');

    // Idempotent: only the unrepairable finding remains.
    const third = await run();
    expect(third.findings.map((f) => f.kind)).toEqual(['cache_holds_ahead_of_postgres']);
    expect(third.repairs).toBe(0);
  });

  it('alerts above the drift threshold and resumes a bounded pass from its cursor', async () => {
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const users = [];
    for (let i = 0; i < 3; i++) {
      const u = await seedUser(sql, {});
      await ensureAccount(redis, sql, prefix, u.userId);
      await redis.hset(userKeys(prefix, u.userId).account, 'dlim', '7');
      users.push(u.userId);
    }
    const alerting = await run({ driftAlertUsersMax: 2, repair: false });
    expect(alerting.alert).toMatch(/cache drift in \d+ users exceeds the threshold of 2/);
    const [row] = await sql<{ first: { kind: string } }[]>`
      select findings->0 as first from reconciliation_runs where id = ${alerting.runId}`;
    expect(row?.first.kind).toBe('alert');

    // One user per run: each run records a cursor and the next starts after it, until the pass ends.
    const total = (await sql<{ n: number }[]>`select count(*)::int as n from users`)[0]!.n;
    const seen: string[] = [];
    let cursor: string | null = 'start';
    let runs = 0;
    while (cursor !== null && runs < total + 2) {
      const r = await run({ usersPerRunMax: 1 });
      runs++;
      cursor = r.cursor;
      if (cursor !== null) seen.push(cursor);
    }
    expect(cursor).toBeNull();
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(total);
    for (const userId of users)
      expect(await redis.hget(userKeys(prefix, userId).account, 'dlim')).not.toBe('7');
  });

  it('the guarded rebuild refuses while the user has an entry pending or the cache moved since it was read', async () => {
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const u = await userWithHold(900); // its decision entry is still in the outbox
    const keys = userKeys(prefix, u.userId);
    const read = await readCachedAccount(redis, prefix, u.userId);
    expect(read.pendingEntries).toBe(1);
    expect(await rebuildFromPostgres(redis, sql, prefix, u.userId, read.fingerprint, Date.now())).toBe(
      'pending',
    );
    await drainOutbox(redis, sql, prefix);
    // A change after the read (here: a hold reserved meanwhile) makes the fingerprint stale.
    expect(
      await rebuildFromPostgres(
        redis,
        sql,
        prefix,
        u.userId,
        read.fingerprint.replace('hold=900', 'hold=0'),
        Date.now(),
      ),
    ).toBe('changed');
    expect(await redis.hget(keys.account, 'hold')).toBe('900');
    const fresh = await readCachedAccount(redis, prefix, u.userId);
    expect(await rebuildFromPostgres(redis, sql, prefix, u.userId, fresh.fingerprint, Date.now())).toBe(
      'rebuilt',
    );
    expect(await redis.hget(keys.account, 'hold')).toBe('900');
    expect(await redis.hlen(keys.holds)).toBe(1);
  });
});
