// Proves the asynchronous Issuing events end in the same state in every order of arrival and with
// duplicates (shuffled sequences on real Redis through the signed events endpoint), that stand-in
// approvals and Stripe's declines of our approvals correct the hold, that refunds (linked, reversed,
// unlinked) end the same in every order, and that expired holds release.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { userKeys } from '../../shared/redis/keys.ts';
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
import { sweepExpiredHolds } from './handler.ts';

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

/** Deterministic shuffle (mulberry32) so a failing order can be reproduced from its seed. */
function shuffled<T>(items: T[], seed: number): T[] {
  let a = seed;
  const random = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Stripe's refund reversal: a `refund` transaction with a negative amount. */
function refundReversal<T extends { data: { object: { amount: number } } }>(event: T): T {
  event.data.object.amount = -Math.abs(event.data.object.amount);
  return event;
}

async function scenario(seed: number) {
  const { userId, cardId } = await seedUser(services.database.sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
  });
  const t = Math.floor(Date.now() / 1000);
  const decide = async (authorizationId: string, amountCents: number, requestHistory = 0) => {
    const res = await post(
      hotPath,
      '/stripe/authorizations',
      authorizationRequest({ cardId, authorizationId, amountCents, requestHistory, createdS: t }),
    );
    expect(res.json.approved).toBe(true);
  };
  const A = `iauth_A${seed}`;
  const B = `iauth_B${seed}`;
  const C = `iauth_C${seed}`;
  const D = `iauth_D${seed}`;
  // Synchronous decisions happen first, in order (Stripe asks before it tells).
  await decide(A, 4_000);
  await decide(A, 3_000, 1); // incremental
  await decide(C, 1_000);
  await decide(D, 2_500);
  const auth = (
    id: string,
    amount: number,
    approved: boolean,
    status: 'pending' | 'closed' | 'reversed',
    history: number,
    type: 'issuing_authorization.created' | 'issuing_authorization.updated',
    at: number,
  ) =>
    authorizationEvent({
      type,
      cardId,
      authorizationId: id,
      amountCents: amount,
      approved,
      status,
      requestHistory: history,
      createdS: at,
    });
  const events = [
    auth(A, 4_000, true, 'pending', 1, 'issuing_authorization.created', t),
    auth(A, 7_000, true, 'pending', 2, 'issuing_authorization.updated', t + 1),
    transactionEvent({ cardId, type: 'capture', amountCents: 5_000, authorizationId: A, createdS: t + 2 }),
    auth(A, 7_000, true, 'closed', 2, 'issuing_authorization.updated', t + 3),
    // Stand-in: Stripe approved B without asking us, then reversed it.
    auth(B, 2_000, true, 'pending', 1, 'issuing_authorization.created', t),
    auth(B, 2_000, true, 'reversed', 1, 'issuing_authorization.updated', t + 5),
    // Stripe declined C although we approved it.
    auth(C, 1_000, false, 'closed', 1, 'issuing_authorization.created', t),
    // D stays open with a partial capture.
    auth(D, 2_500, true, 'pending', 1, 'issuing_authorization.created', t),
    transactionEvent({ cardId, type: 'capture', amountCents: 1_000, authorizationId: D, createdS: t + 4 }),
    // A refund on D and its reversal (Stripe: a refund with a negative amount), in any order
    // relative to D's capture: the refund is credited against the capture whenever that arrives.
    transactionEvent({ cardId, type: 'refund', amountCents: 400, authorizationId: D, createdS: t + 8 }),
    refundReversal(
      transactionEvent({ cardId, type: 'refund', amountCents: 400, authorizationId: D, createdS: t + 9 }),
    ),
    // A force capture with no authorization, and a refund with none (held for review: not credited).
    transactionEvent({ cardId, type: 'capture', amountCents: 500, authorizationId: null, createdS: t + 6 }),
    transactionEvent({ cardId, type: 'refund', amountCents: 1_000, authorizationId: null, createdS: t + 7 }),
  ];
  // Every event arrives twice, in a shuffled order.
  for (const event of shuffled([...events, ...events], seed)) {
    const res = await post(hotPath, '/stripe/events', event);
    expect(res.status).toBe(200);
  }
  const keys = userKeys(services.prefix, userId);
  const [account, holds] = await Promise.all([
    services.redis.hgetall(keys.account),
    services.redis.hgetall(keys.holds),
  ]);
  return { hold: account['hold'], unsettled: account['uns'], holds };
}

describe('lifecycle events in any order', () => {
  it('ends in the same final state for every shuffled order with duplicates', async () => {
    const expected = { hold: '1500', unsettled: '6500', holds: { [`iauth_D${1}`]: '1500' } };
    const first = await scenario(1);
    expect(first).toEqual(expected);
    for (const seed of [2, 3, 4, 5, 6, 7]) {
      const state = await scenario(seed);
      expect({
        seed,
        hold: state.hold,
        unsettled: state.unsettled,
        holds: Object.values(state.holds),
      }).toEqual({
        seed,
        hold: '1500',
        unsettled: '6500',
        holds: ['1500'],
      });
    }
  });

  it('answers 400 to a malformed known event and records nothing; 200 and no processing for unknown types', async () => {
    const { cardId, userId } = await seedUser(services.database.sql, {});
    const bad = transactionEvent({
      cardId,
      type: 'capture',
      amountCents: 100,
      authorizationId: null,
      createdS: 1,
    });
    (bad.data.object as { amount: unknown }).amount = 'lots';
    const res = await post(hotPath, '/stripe/events', bad);
    expect(res.status).toBe(400);
    const keys = userKeys(services.prefix, userId);
    expect(await services.redis.exists(keys.applied(bad.id))).toBe(0);
    const other = await post(hotPath, '/stripe/events', {
      id: 'evt_other_1',
      object: 'event',
      type: 'issuing_card.updated',
      data: {},
    });
    expect(other.status).toBe(200);
    expect(other.json).toEqual({ received: true, processed: false });
  });

  it('releases a hold Stripe never closes once it passes its expiry', async () => {
    const { cardId, userId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, PRICE) }],
    });
    const authorizationId = 'iauth_expiring_1';
    await post(
      hotPath,
      '/stripe/authorizations',
      authorizationRequest({ cardId, authorizationId, amountCents: 2_000 }),
    );
    const keys = userKeys(services.prefix, userId);
    expect(
      await sweepExpiredHolds(hotPath.lifecycle, services.redis, services.prefix, userId, Date.now()),
    ).toBe(0);
    expect(await services.redis.hget(keys.account, 'hold')).toBe('2000');
    // Eight days later (the default hold lasts seven).
    const later = Date.now() + 8 * 86_400_000;
    expect(await sweepExpiredHolds(hotPath.lifecycle, services.redis, services.prefix, userId, later)).toBe(
      1,
    );
    expect(await services.redis.hget(keys.account, 'hold')).toBe('0');
    expect(await sweepExpiredHolds(hotPath.lifecycle, services.redis, services.prefix, userId, later)).toBe(
      0,
    );
  });
});
