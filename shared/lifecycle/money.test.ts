// Proves the lifecycle's money rules on the real app (Stripe-signed events through app.request), real
// Redis and Postgres, with a real ledger writer draining the outbox and the conservation check after
// each case: a closed authorization's captured part stays held until its transaction books; long-hold
// merchant classes expire at 31 days, others at 7; Stripe's signs (refund and capture reversals);
// refunds beyond what was captured, and unlinked ones, are held for review (ledger account, metric),
// never spendable; unsettled is never negative in Postgres; a non-USD event is recorded, not booked.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLedgerWriterMetrics } from '../../ledger-writer/metrics.ts';
import { waitForEmptyOutbox } from '../../ledger-writer/testing.ts';
import { createLedgerWriter, type LedgerWriter } from '../../ledger-writer/writer.ts';
import { duplicateRedis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
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
import { transactionMovement } from './handler.ts';

const DAY_MS = 86_400_000;
let world: HotPathWorld;
let services: TestServices;
let hotPath: HotPath;
let writer: LedgerWriter;

beforeAll(async () => {
  world = await setUpHotPathWorld({ VELOCITY_LIMIT_PER_MIN: '1000' });
  ({ services, hotPath } = world);
  writer = createLedgerWriter({
    redis: duplicateRedis(services.redis),
    sql: services.sqlFor('credana_ledger_writer'),
    prefix: services.prefix,
    consumer: 'lifecycle-money-test',
    batchMax: 50,
    batchWaitMs: 10,
    metrics: createLedgerWriterMetrics(),
  });
  await writer.start();
});

afterAll(async () => {
  await writer?.stop();
  await world?.close();
});

const nowS = () => Math.floor(Date.now() / 1000);

/** A user whose borrow power is `cents`, with helpers bound to their card. */
async function user(cents: bigint) {
  const { sql } = services.database;
  const seeded = await seedUser(sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(cents, WETH_PRICE_E8) }],
  });
  const keys = userKeys(services.prefix, seeded.userId);
  return {
    ...seeded,
    keys,
    async decide(authorizationId: string, amountCents: number, mcc?: string) {
      const res = await post(
        hotPath,
        '/stripe/authorizations',
        authorizationRequest({
          cardId: seeded.cardId,
          authorizationId,
          amountCents,
          ...(mcc ? { mcc } : {}),
        }),
      );
      expect(res.status).toBe(200);
      return res.json;
    },
    async event(body: unknown) {
      const res = await post(hotPath, '/stripe/events', body);
      expect(res.status).toBe(200);
      return res.json;
    },
    async cache() {
      const account = await services.redis.hgetall(keys.account);
      return { hold: BigInt(account['hold'] ?? '0'), unsettled: BigInt(account['uns'] ?? '0') };
    },
    /** Drains the outbox into Postgres and runs the conservation check. */
    async conserved() {
      await waitForEmptyOutbox(services.redis, services.prefix, 15_000);
      expect(await conservationProblems(sql, services.redis, services.prefix, [seeded.userId])).toEqual([]);
      const [row] = await sql<{ unsettled_cents: string; holds_cents: string }[]>`
        select unsettled_cents::text, holds_cents::text from credit_accounts where user_id = ${seeded.userId}`;
      expect(BigInt(row?.unsettled_cents ?? '0')).toBeGreaterThanOrEqual(0n);
      return { holds: BigInt(row?.holds_cents ?? '0'), unsettled: BigInt(row?.unsettled_cents ?? '0') };
    },
    async reviewCents() {
      const [row] = await sql<{ total: string }[]>`
        select coalesce(sum(amount_cents), 0)::text as total from ledger_entries
        where user_id = ${seeded.userId} and account = 'user_refunds_held'`;
      return BigInt(row?.total ?? '0');
    },
  };
}

/** A transaction event with Stripe's amount exactly as given (its sign included). */
function signedTransaction(o: {
  cardId: string;
  type: 'capture' | 'refund';
  stripeAmountCents: number;
  authorizationId: string | null;
  currency?: string;
}) {
  const event = transactionEvent({
    cardId: o.cardId,
    type: o.type,
    amountCents: 0,
    authorizationId: o.authorizationId,
    createdS: nowS(),
  });
  const object = event.data.object as { amount: number; currency: string };
  object.amount = o.stripeAmountCents;
  if (o.currency !== undefined) object.currency = o.currency;
  return event;
}

function closed(
  cardId: string,
  authorizationId: string,
  amountCents: number,
  transactions?: { type: 'capture' | 'refund'; amount: number }[],
) {
  const event = authorizationEvent({
    type: 'issuing_authorization.updated',
    cardId,
    authorizationId,
    amountCents,
    approved: true,
    status: 'closed',
    requestHistory: 1,
    createdS: nowS(),
  });
  if (transactions !== undefined) {
    (event.data.object as Record<string, unknown>)['transactions'] = transactions.map((t, i) => ({
      id: `ipi_listed${i}`,
      object: 'issuing.transaction',
      ...t,
    }));
  }
  return event;
}

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const json = await hotPath.metrics.registry.getMetricsAsJSON();
  const found = json.find((m) => m.name === name);
  const value = (found?.values ?? []).find((v) =>
    Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want),
  );
  return Number(value?.value ?? 0);
}

describe("a closed authorization's captured part", () => {
  it('stays held until its transaction books, so the captured amount cannot be spent again', async () => {
    const u = await user(10_000n);
    expect((await u.decide('iauth_close1', 6_000)).approved).toBe(true);
    // Stripe closes the authorization (captured 6,000) before issuing_transaction.created arrives.
    await u.event(closed(u.cardId, 'iauth_close1', 6_000, [{ type: 'capture', amount: -6_000 }]));
    expect(await u.cache()).toEqual({ hold: 6_000n, unsettled: 0n });
    // The captured money is gone from the Issuing balance: it must not be approved again.
    const again = await u.decide('iauth_close2', 6_000);
    expect(again.approved).toBe(false);
    // Neither the expiry sweep nor the reconciler's release moves it before its time.
    expect((await hotPath.lifecycle.expireHold(u.userId, 'iauth_close1')).applied).toBe(false);
    expect(await u.cache()).toEqual({ hold: 6_000n, unsettled: 0n });
    // The transaction books: the hold becomes unsettled debt.
    await u.event(
      transactionEvent({
        cardId: u.cardId,
        type: 'capture',
        amountCents: 6_000,
        authorizationId: 'iauth_close1',
        createdS: nowS(),
      }),
    );
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 6_000n });
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 6_000n });
    const [auth] = await services.database.sql<
      { status: string; held_cents: string; captured_cents: string }[]
    >`
      select status, held_cents::text, captured_cents::text from authorizations where id = 'iauth_close1'`;
    expect(auth).toEqual({ status: 'closed', held_cents: '0', captured_cents: '6000' });
  });

  it('holds only what Stripe lists as captured (partial capture) and releases the rest at close', async () => {
    const u = await user(10_000n);
    expect((await u.decide('iauth_part1', 5_000)).approved).toBe(true);
    await u.event(closed(u.cardId, 'iauth_part1', 5_000, [{ type: 'capture', amount: -3_000 }]));
    expect(await u.cache()).toEqual({ hold: 3_000n, unsettled: 0n });
    expect(await u.conserved()).toEqual({ holds: 3_000n, unsettled: 0n });
    await u.event(
      transactionEvent({
        cardId: u.cardId,
        type: 'capture',
        amountCents: 3_000,
        authorizationId: 'iauth_part1',
        createdS: nowS(),
      }),
    );
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 3_000n });
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 3_000n });
  });

  it('keeps the whole hold when Stripe lists no capture, releases all of it when the capture books, and expires after the wait', async () => {
    const u = await user(10_000n);
    expect((await u.decide('iauth_nolist', 4_000)).approved).toBe(true);
    await u.event(closed(u.cardId, 'iauth_nolist', 4_000));
    expect(await u.cache()).toEqual({ hold: 4_000n, unsettled: 0n });
    await u.event(
      transactionEvent({
        cardId: u.cardId,
        type: 'capture',
        amountCents: 2_500,
        authorizationId: 'iauth_nolist',
        createdS: nowS(),
      }),
    );
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 2_500n });
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 2_500n });

    // A closed authorization whose transaction never comes is released after the wait, not before.
    expect((await u.decide('iauth_lost', 1_000)).approved).toBe(true);
    await u.event(closed(u.cardId, 'iauth_lost', 1_000, [{ type: 'capture', amount: -1_000 }]));
    expect(await hotPath.lifecycle.expireHold(u.userId, 'iauth_lost', Date.now() + 6 * DAY_MS)).toMatchObject(
      {
        applied: false,
      },
    );
    expect((await u.cache()).hold).toBe(1_000n);
    expect(await hotPath.lifecycle.expireHold(u.userId, 'iauth_lost', Date.now() + 8 * DAY_MS)).toMatchObject(
      {
        applied: true,
        holdDeltaCents: -1_000n,
      },
    );
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 2_500n });
  });
});

describe("a closed authorization's captured part after Redis lost the account", () => {
  it('is rebuilt from Postgres and released when its capture books', async () => {
    const u = await user(10_000n);
    expect((await u.decide('iauth_rebuild1', 3_000)).approved).toBe(true);
    await u.event(closed(u.cardId, 'iauth_rebuild1', 3_000, [{ type: 'capture', amount: -3_000 }]));
    expect(await u.conserved()).toEqual({ holds: 3_000n, unsettled: 0n });
    // Redis restarted empty (for this user): the account, its holds and the authorization's state.
    await services.redis.del(
      u.keys.account,
      u.keys.holds,
      u.keys.holdExpiries,
      u.keys.authState('iauth_rebuild1'),
    );
    await u.event(
      transactionEvent({
        cardId: u.cardId,
        type: 'capture',
        amountCents: 3_000,
        authorizationId: 'iauth_rebuild1',
        createdS: nowS(),
      }),
    );
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 3_000n });
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 3_000n });
  });
});

describe('hold expiry by merchant class', () => {
  it('holds hotel, car-rental, airline and cruise authorizations 31 days and others 7', async () => {
    const u = await user(1_000_000n);
    const long = ['7011', '3501', '3790', '7512', '3400', '7513', '4511', '3000', '3300', '4411'];
    const short = ['5411', '5812', '5999', '4111'];
    const startedMs = Date.now();
    for (const mcc of [...long, ...short]) {
      expect((await u.decide(`iauth_mcc${mcc}`, 100, mcc)).approved).toBe(true);
    }
    // A stand-in approval Stripe made without asking us (first seen by the writer through the event).
    const standIn = authorizationEvent({
      type: 'issuing_authorization.created',
      cardId: u.cardId,
      authorizationId: 'iauth_standin_air',
      amountCents: 100,
      approved: true,
      status: 'pending',
      requestHistory: 1,
      createdS: nowS(),
      mcc: '4511',
    });
    await u.event(standIn);
    await u.conserved();
    const rows = await services.database.sql<{ id: string; expires_at: Date }[]>`
      select id, expires_at from authorizations where user_id = ${u.userId}`;
    const daysOf = (id: string) => {
      const row = rows.find((r) => r.id === id);
      return Math.round((row!.expires_at.getTime() - startedMs) / DAY_MS);
    };
    for (const mcc of long) {
      expect({ mcc, days: daysOf(`iauth_mcc${mcc}`) }).toEqual({ mcc, days: 31 });
      const score = Number(await services.redis.zscore(u.keys.holdExpiries, `iauth_mcc${mcc}`));
      expect({ mcc, days: Math.round((score - startedMs) / DAY_MS) }).toEqual({ mcc, days: 31 });
    }
    for (const mcc of short) expect({ mcc, days: daysOf(`iauth_mcc${mcc}`) }).toEqual({ mcc, days: 7 });
    expect(daysOf('iauth_standin_air')).toBe(31);
  });
});

describe("Stripe's transaction signs", () => {
  it('maps every type and sign onto a debit or a credit', () => {
    expect(transactionMovement({ type: 'capture', amount: -500 })).toEqual({
      kind: 'debit',
      variant: '',
      amountCents: 500n,
    });
    expect(transactionMovement({ type: 'capture', amount: 500 })).toEqual({
      kind: 'credit',
      variant: '',
      amountCents: 500n,
    });
    expect(transactionMovement({ type: 'refund', amount: 500 })).toEqual({
      kind: 'credit',
      variant: '',
      amountCents: 500n,
    });
    expect(transactionMovement({ type: 'refund', amount: -500 })).toEqual({
      kind: 'debit',
      variant: 'refund_reversal',
      amountCents: 500n,
    });
  });

  it('books a refund reversal as a debit and a capture reversal as a credit', async () => {
    const u = await user(100_000n);
    expect((await u.decide('iauth_sign1', 5_000)).approved).toBe(true);
    const capture = (stripeAmountCents: number) =>
      signedTransaction({
        cardId: u.cardId,
        type: 'capture',
        stripeAmountCents,
        authorizationId: 'iauth_sign1',
      });
    const refund = (stripeAmountCents: number) =>
      signedTransaction({
        cardId: u.cardId,
        type: 'refund',
        stripeAmountCents,
        authorizationId: 'iauth_sign1',
      });
    await u.event(capture(-5_000));
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 5_000n });
    await u.event(refund(2_000));
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 3_000n });
    // The merchant takes the refund back: the user owes it again.
    await u.event(refund(-2_000));
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 5_000n });
    // A capture reversal gives money back (bounded by what was captured).
    await u.event(capture(1_000));
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 4_000n });
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 4_000n });
    expect(await u.reviewCents()).toBe(0n);
  });
});

describe('refunds are bounded by what was captured', () => {
  it('holds a refund beyond the captured amount for review: not spendable, booked, counted', async () => {
    const u = await user(10_000n);
    const before = await metric('credana_refunds_held_for_review_total', { reason: 'beyond_captured' });
    expect((await u.decide('iauth_big1', 3_000)).approved).toBe(true);
    await u.event(
      transactionEvent({
        cardId: u.cardId,
        type: 'capture',
        amountCents: 3_000,
        authorizationId: 'iauth_big1',
        createdS: nowS(),
      }),
    );
    // A forged or mistaken $10M refund on a $30 capture.
    await u.event(
      signedTransaction({
        cardId: u.cardId,
        type: 'refund',
        stripeAmountCents: 1_000_000_000,
        authorizationId: 'iauth_big1',
      }),
    );
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 0n });
    // Only the borrow power is available, not $10M of credit.
    expect((await u.decide('iauth_big2', 20_000)).approved).toBe(false);
    expect((await u.decide('iauth_big3', 10_000)).approved).toBe(true);
    expect(await metric('credana_refunds_held_for_review_total', { reason: 'beyond_captured' })).toBe(
      before + 1,
    );
    expect(await u.conserved()).toEqual({ holds: 10_000n, unsettled: 0n });
    expect(await u.reviewCents()).toBe(-999_997_000n);
    // A second refund on the same authorization gets nothing more: the capture is refunded already.
    await u.event(
      signedTransaction({
        cardId: u.cardId,
        type: 'refund',
        stripeAmountCents: 500,
        authorizationId: 'iauth_big1',
      }),
    );
    expect(await u.cache()).toEqual({ hold: 10_000n, unsettled: 0n });
    expect(await u.conserved()).toEqual({ holds: 10_000n, unsettled: 0n });
    expect(await u.reviewCents()).toBe(-999_997_500n);
  });

  it('holds a force refund (no authorization) for review', async () => {
    const u = await user(10_000n);
    const before = await metric('credana_refund_cents_held_for_review_total', { reason: 'unlinked' });
    await u.event(
      transactionEvent({
        cardId: u.cardId,
        type: 'capture',
        amountCents: 2_000,
        authorizationId: null,
        createdS: nowS(),
      }),
    );
    await u.event(
      transactionEvent({
        cardId: u.cardId,
        type: 'refund',
        amountCents: 1_500,
        authorizationId: null,
        createdS: nowS(),
      }),
    );
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 2_000n });
    expect(await metric('credana_refund_cents_held_for_review_total', { reason: 'unlinked' })).toBe(
      before + 1_500,
    );
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 2_000n });
    expect(await u.reviewCents()).toBe(-1_500n);
  });

  it('credits a refund that arrived before its capture once the capture books', async () => {
    const u = await user(10_000n);
    expect((await u.decide('iauth_early1', 4_000)).approved).toBe(true);
    await u.event(
      signedTransaction({
        cardId: u.cardId,
        type: 'refund',
        stripeAmountCents: 1_000,
        authorizationId: 'iauth_early1',
      }),
    );
    expect(await u.cache()).toEqual({ hold: 4_000n, unsettled: 0n });
    await u.event(
      signedTransaction({
        cardId: u.cardId,
        type: 'capture',
        stripeAmountCents: -4_000,
        authorizationId: 'iauth_early1',
      }),
    );
    expect(await u.cache()).toEqual({ hold: 0n, unsettled: 3_000n });
    expect(await u.conserved()).toEqual({ holds: 0n, unsettled: 3_000n });
    expect(await u.reviewCents()).toBe(0n);
  });
});

describe('currency', () => {
  it('records a non-USD event without moving any cents, and says so', async () => {
    const u = await user(10_000n);
    const before = await metric('credana_lifecycle_events_total', {
      type: 'issuing_transaction.created',
      result: 'unsupported_currency',
    });
    expect((await u.decide('iauth_eur1', 2_000)).approved).toBe(true);
    const capture = signedTransaction({
      cardId: u.cardId,
      type: 'capture',
      stripeAmountCents: -2_000,
      authorizationId: 'iauth_eur1',
      currency: 'eur',
    });
    const answer = await u.event(capture);
    expect(answer).toMatchObject({ received: true, processed: false, reason: 'unsupported_currency' });
    const close = closed(u.cardId, 'iauth_eur1', 2_000, [{ type: 'capture', amount: -2_000 }]);
    (close.data.object as { currency: string }).currency = 'eur';
    expect(await u.event(close)).toMatchObject({ processed: false, reason: 'unsupported_currency' });
    // Nothing moved: the USD hold stands, no unsettled debt in a foreign currency.
    expect(await u.cache()).toEqual({ hold: 2_000n, unsettled: 0n });
    expect(
      await metric('credana_lifecycle_events_total', {
        type: 'issuing_transaction.created',
        result: 'unsupported_currency',
      }),
    ).toBe(before + 1);
    expect(await u.conserved()).toEqual({ holds: 2_000n, unsettled: 0n });
    // The events are kept for a person to book (card_events), once each even when Stripe retries.
    expect((await u.event(capture)).duplicate).toBe(true);
    const kept = await services.database.sql<{ id: string }[]>`
      select id from card_events where id in (${capture.id}, ${close.id})`;
    expect(kept.length).toBe(2);
  });
});
