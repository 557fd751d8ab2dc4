// Proves a lifecycle event is never booked to a user whose cached cards lack its card: with the hot
// path's card → user view pointing at the wrong user (Redis's card index wrong, as a scrambled reply
// once made it), the event goes to the card's owner in Postgres and the wrong user's cache is untouched;
// and that a fresh or rebuilt account (every card of the user from Postgres) is not refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cardIndexKey, userKeys } from '../../shared/redis/keys.ts';
import type { TestServices } from '../../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import {
  type HotPath,
  type HotPathWorld,
  post,
  setUpHotPathWorld,
  WETH_PRICE_E8,
} from '../../test/support/hot-path.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from '../../test/support/stripe.ts';

let world: HotPathWorld;
let services: TestServices;
let hotPath: HotPath;

beforeAll(async () => {
  world = await setUpHotPathWorld();
  ({ services, hotPath } = world);
});

afterAll(async () => {
  await world?.close();
});

const nowS = () => Math.floor(Date.now() / 1000);

async function user() {
  const seeded = await seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
  });
  return { ...seeded, keys: userKeys(services.prefix, seeded.userId) };
}

/** What a user's cache holds of money, and its outbox entries of that user. */
async function cached(u: Awaited<ReturnType<typeof user>>) {
  const [account, holds, outbox] = await Promise.all([
    services.redis.hgetall(u.keys.account),
    services.redis.hgetall(u.keys.holds),
    services.redis.xrange(u.keys.outbox, '-', '+'),
  ]);
  const records = outbox
    .map(([, fields]) => JSON.parse(fields[fields.indexOf('r') + 1]!) as { userId: string; cardId: string })
    .filter((r) => r.userId === u.userId);
  return { hold: account['hold'], unsettled: account['uns'], holds, records: records.length };
}

describe('card → user guard on lifecycle events', () => {
  it('does not book an event to the user a stale card-owner view names; books it to the card’s owner', async () => {
    const owner = await user();
    const other = await user();
    // The other user's cache is live and holds money of its own.
    const own = await post(
      hotPath,
      '/stripe/authorizations',
      authorizationRequest({
        cardId: other.cardId,
        authorizationId: `iauth_${other.cardId}`,
        amountCents: 1_000,
      }),
    );
    expect(own.json.approved).toBe(true);
    const otherBefore = await cached(other);
    expect(otherBefore.hold).toBe('1000');
    // The wrong view: the card index says the owner's card is the other user's, and the hot path has not
    // looked this card up yet, so it takes (and remembers) the other user.
    await services.redis.hset(cardIndexKey(services.prefix), owner.cardId, other.userId);
    const authorizationId = `iauth_${owner.cardId}`;
    const t = nowS();
    for (const event of [
      authorizationEvent({
        type: 'issuing_authorization.created',
        cardId: owner.cardId,
        authorizationId,
        amountCents: 2_500,
        approved: true,
        status: 'pending',
        requestHistory: 1,
        createdS: t,
      }),
      transactionEvent({
        cardId: owner.cardId,
        type: 'capture',
        amountCents: 2_000,
        authorizationId,
        createdS: t + 1,
      }),
    ]) {
      const res = await post(hotPath, '/stripe/events', event);
      expect(res.status).toBe(200);
      expect(res.json.processed).toBe(true);
    }
    // Nothing of it on the other user: not in their cache, not in their outbox.
    expect(await cached(other)).toEqual(otherBefore);
    // All of it on the owner's (their account built from Postgres on the way), and the index repaired.
    expect(await cached(owner)).toEqual({
      hold: '500',
      unsettled: '2000',
      holds: { [authorizationId]: '500' },
      records: 2,
    });
    expect(await services.redis.hget(cardIndexKey(services.prefix), owner.cardId)).toBe(owner.userId);
  });

  it('books to the card’s owner when the stale view names a user that does not exist', async () => {
    const owner = await user();
    await services.redis.hset(cardIndexKey(services.prefix), owner.cardId, crypto.randomUUID());
    const authorizationId = `iauth_${owner.cardId}`;
    const res = await post(
      hotPath,
      '/stripe/events',
      authorizationEvent({
        type: 'issuing_authorization.created',
        cardId: owner.cardId,
        authorizationId,
        amountCents: 1_200,
        approved: true,
        status: 'pending',
        requestHistory: 1,
        createdS: nowS(),
      }),
    );
    expect(res.status).toBe(200);
    expect(res.json.processed).toBe(true);
    expect((await cached(owner)).holds).toEqual({ [authorizationId]: '1200' });
  });

  it('applies an event to an account rebuilt from Postgres after the cache lost it, the card among its cards', async () => {
    const owner = await user();
    const authorizationId = `iauth_${owner.cardId}`;
    const first = await post(
      hotPath,
      '/stripe/authorizations',
      authorizationRequest({ cardId: owner.cardId, authorizationId, amountCents: 3_000 }),
    );
    expect(first.json.approved).toBe(true);
    // The cache restarted empty for this user (the hot path still remembers the card's owner).
    await services.redis.del(owner.keys.account, owner.keys.cards, owner.keys.holds, owner.keys.holdExpiries);
    const res = await post(
      hotPath,
      '/stripe/events',
      transactionEvent({
        cardId: owner.cardId,
        type: 'capture',
        amountCents: 1_000,
        authorizationId,
        createdS: nowS(),
      }),
    );
    expect(res.status).toBe(200);
    expect(res.json.processed).toBe(true);
    expect(await services.redis.hexists(owner.keys.cards, owner.cardId)).toBe(1);
    expect((await cached(owner)).unsettled).toBe('1000');
  });
});
