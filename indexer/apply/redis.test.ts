// Proves the indexer's repair of a dirty user never rebuilds the cached account from a Postgres that lags Redis: on real Postgres and Redis with the real hot path, a hold whose outbox entry is not yet written survives the repair (only the chain-owned fields are rewritten), and once the entry is written the repair rebuilds the account with the hold in it.
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeys } from '../../shared/redis/keys.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPathWorld, post, setUpHotPathWorld, WETH_PRICE_E8 } from '../../test/support/hot-path.ts';
import { drainOutbox } from '../../test/support/reconcile.ts';
import { authorizationRequest } from '../../test/support/stripe.ts';
import { createCacheWriter } from './redis.ts';

let world: HotPathWorld;

beforeAll(async () => {
  world = await setUpHotPathWorld();
});

afterAll(async () => {
  await world?.close();
});

describe('cache writer repair', () => {
  it('keeps an unwritten hold while the outbox has the user, and rebuilds once it is written', async () => {
    const { services, hotPath } = world;
    const { redis, prefix } = services;
    const sql = services.database.sql;
    const collateral = wethForBorrowPower(100_000n, WETH_PRICE_E8);
    const user = await seedUser(sql, { collateral: [{ assetId: 'WETH', amountBase: collateral }] });
    const res = await post(
      hotPath,
      '/stripe/authorizations',
      authorizationRequest({ cardId: user.cardId, amountCents: 1_500 }),
    );
    expect(res.json.approved).toBe(true);
    const keys = userKeys(prefix, user.userId);
    expect(await redis.hget(keys.account, 'hold')).toBe('1500'); // in Redis; its entry still in the outbox

    // The indexer's write-through for this user failed (Redis blipped) while the chain halved the
    // collateral; Redis answers again and the indexer repairs its dirty users.
    const half = collateral / 2n;
    await sql`update positions set collateral_base = ${half.toString()} where user_id = ${user.userId}`;
    const builtBefore = await redis.hget(keys.account, 'built');
    const cache = createCacheWriter({ sql, redis, prefix, logger: pino({ level: 'silent' }) });
    cache.markDirty([user.userId], new Error('write-through failed'));
    expect(await cache.repair()).toBe(1); // still dirty: Postgres lags Redis for this user

    // The hold is kept (a rebuild would have dropped it and handed back 1500 cents), and the
    // chain-owned collateral is current.
    expect(await redis.hget(keys.account, 'hold')).toBe('1500');
    expect(Object.values(await redis.hgetall(keys.holds))).toEqual(['1500']);
    expect(await redis.hget(keys.account, 'built')).toBe(builtBefore);
    expect(await redis.hget(keys.account, 'c:WETH')).toBe(half.toString());

    // Once the writer has written the entry, the repair rebuilds from Postgres, which now has the hold.
    await drainOutbox(redis, sql, prefix);
    await new Promise((resolve) => setTimeout(resolve, 2)); // a rebuild gets a later build stamp
    expect(await cache.repair()).toBe(0);
    expect(await redis.hget(keys.account, 'built')).not.toBe(builtBefore);
    expect(await redis.hget(keys.account, 'hold')).toBe('1500');
    expect(await redis.hget(keys.account, 'c:WETH')).toBe(half.toString());
    expect(Object.values(await redis.hgetall(keys.holds))).toEqual(['1500']);
  });
});
