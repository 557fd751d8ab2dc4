// Proves the holds job restores a hold Redis lost, keeps a closed hold whose capture is not booked yet, releases holds past their expiry or closed by Stripe through the hot path's lifecycle script (so the ledger writer books the release), reports a hold stuck in Postgres, and finds nothing on a second run — real Postgres, Redis and hot path.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeys } from '../shared/redis/keys.ts';
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
import { authorizationRequest } from '../test/support/stripe.ts';
import { holdsJob } from './holds.ts';
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

async function hold(amountCents: number) {
  const user = await seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
  });
  const authorizationId = `iauth_${user.userId.slice(0, 8)}${amountCents}`;
  const res = await post(
    hotPath,
    '/stripe/authorizations',
    authorizationRequest({ cardId: user.cardId, amountCents, authorizationId }),
  );
  expect(res.json.approved).toBe(true);
  return { ...user, authorizationId, keys: userKeys(services.prefix, user.userId) };
}

/** What a cache failure does: the hold and its share of the total vanish from Redis. */
async function loseInRedis(h: Awaited<ReturnType<typeof hold>>, amountCents: number) {
  await services.redis.hdel(h.keys.holds, h.authorizationId);
  await services.redis.zrem(h.keys.holdExpiries, h.authorizationId);
  await services.redis.hincrby(h.keys.account, 'hold', -amountCents);
}

describe('holds job', () => {
  it('restores, releases, reports, and is idempotent', async () => {
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const lost = await hold(1_000);
    const expired = await hold(2_000);
    const closed = await hold(3_000);
    const stuck = await hold(4_000);
    const waiting = await hold(5_000);
    await drainOutbox(redis, sql, prefix);
    await loseInRedis(lost, 1_000);
    await loseInRedis(expired, 2_000);
    await sql`update authorizations set expires_at = now() - interval '1 hour' where id = ${expired.authorizationId}`;
    await loseInRedis(stuck, 4_000);
    await sql`update authorizations set status = 'reversed' where id = ${stuck.authorizationId}`;
    // Closed by Stripe with its capture not booked yet: it stays held until its expiry (lifecycle).
    await sql`update authorizations set status = 'closed' where id = ${waiting.authorizationId}`;

    const job = holdsJob({
      redis,
      prefix,
      lifecycle: hotPath.lifecycle,
      stripeClosedAuthorizationIds: new Set([closed.authorizationId]),
      holdsPerBatch: 2,
    });
    const first = await runRecorded({ sql }, 'holds', job);
    const summary = first.findings.map((f) => [
      f.kind,
      f['authorizationId'],
      f['reason'] ?? f['cause'] ?? null,
      f['repaired'],
    ]);
    expect(summary).toEqual(
      expect.arrayContaining([
        ['hold_lost_in_cache', lost.authorizationId, 'missing_from_cache', true],
        ['hold_lost_in_cache', expired.authorizationId, 'missing_from_cache', true],
        ['hold_released', expired.authorizationId, 'expired', true],
        ['hold_released', closed.authorizationId, 'stripe_closed', true],
        ['hold_stuck_in_postgres', stuck.authorizationId, null, false],
      ]),
    );
    expect(summary).toHaveLength(5);
    expect(first.repairs).toBe(4);

    // The lost hold is back in Redis with its total; the released ones are gone.
    expect(await redis.hget(lost.keys.holds, lost.authorizationId)).toBe('1000');
    expect(await redis.hget(lost.keys.account, 'hold')).toBe('1000');
    expect(await redis.zscore(lost.keys.holdExpiries, lost.authorizationId)).not.toBeNull();
    expect(await redis.hget(expired.keys.account, 'hold')).toBe('0');
    expect(await redis.hget(closed.keys.account, 'hold')).toBe('0');
    expect(await redis.hget(waiting.keys.holds, waiting.authorizationId)).toBe('5000');

    // The releases went through the outbox: once written, Postgres agrees and the books show them.
    await drainOutbox(redis, sql, prefix);
    const rows = await sql<{ id: string; status: string; held_cents: string }[]>`
      select id, status, held_cents::text from authorizations where id in ${sql([expired.authorizationId, closed.authorizationId])} order by id`;
    expect(rows.map((r) => [r.status, r.held_cents])).toEqual([
      ['expired', '0'],
      ['expired', '0'],
    ]);
    const [releases] = await sql<{ n: number }[]>`
      select count(*)::int as n from ledger_transfers where kind = 'release' and ref like 'lifecycle:expire:%'`;
    expect(releases?.n).toBe(2);

    const second = await runRecorded({ sql }, 'holds', job);
    expect(second.findings.map((f) => f.kind)).toEqual(['hold_stuck_in_postgres']);
    expect(second.repairs).toBe(0);
  });
});
