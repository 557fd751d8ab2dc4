// Proves the Postgres fallback counts as the DECIDE script counts (velocity: only decisions that reached
// the velocity check; daily spend: what this UTC day's decisions granted, increments of older
// authorizations included) and that a fallback transaction still open at its deadline rolls back —
// on a real Postgres, with the rows the ledger writer would have written; and that it never seals a
// merchant name (no data key in the hot path) but queues it, as the hot path's own role; and that it
// holds nothing of its own when the ledger writer commits the event's decision between its read and
// its insert (the shared insertDecisions skips a taken event; the fallback must not go on), and then
// answers that decision as a replay (it was answered a bare 500 before).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase } from '../../shared/db/client.ts';
import { DeadlineError } from '../../shared/deadline.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { createMarket, type Market } from '../../shared/redis/market.ts';
import { authorizationRequestEvent } from '../../shared/stripe/events.ts';
import { connectRedis, type TestServices } from '../../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { setUpServicesWithWeth, testConfig, WETH_PRICE_E8 } from '../../test/support/hot-path.ts';
import { authorizationRequest } from '../../test/support/stripe.ts';
import { newDecisionId } from './engine.ts';
import { decideFromPostgres, type FallbackDeps } from './postgres-fallback.ts';

let services: TestServices;
let market: Market;
let subscriber: Redis;

beforeAll(async () => {
  services = await setUpServicesWithWeth();
  subscriber = connectRedis(services, { shardedSubscriber: true });
  market = await createMarket(services.redis, subscriber, services.prefix);
});

afterAll(async () => {
  market?.close();
  subscriber?.disconnect();
  await services?.close();
});

function deps(extra: Record<string, string> = {}, now: () => number = Date.now): FallbackDeps {
  return {
    sql: services.sqlFor('credana_hot_path'),
    market,
    settings: testConfig(services, extra),
    now,
    holder: 'fallback-test',
  };
}

async function decide(
  d: FallbackDeps,
  cardId: string,
  amountCents: number,
  options: { authorizationId?: string; requestHistory?: number } = {},
) {
  const event = authorizationRequestEvent.parse(authorizationRequest({ cardId, amountCents, ...options }));
  const startedAtMs = d.now();
  return decideFromPostgres(d, event, '{}', newDecisionId(startedAtMs), startedAtMs, startedAtMs + 1_000);
}

/** A decision row as the ledger writer would have written it from the outbox. */
async function recordedDecision(
  userId: string,
  cardId: string,
  reason: string,
  approvedCents: number,
  decidedAt: Date,
  authorizationId = `iauth_${Math.random().toString(36).slice(2)}`,
) {
  const id = `dec_${Math.random().toString(36).slice(2)}`;
  await services.database
    .sql`insert into decisions (id, event_id, authorization_id, user_id, card_id, approved,
      requested_cents, approved_cents, reason, source, latency_us, decided_at)
    values (${id}, ${`evt_${id}`}, ${authorizationId}, ${userId}, ${cardId}, ${approvedCents > 0}, ${approvedCents},
      ${approvedCents}, ${reason}, 'redis', 100, ${decidedAt})`;
}

describe('the Postgres fallback counts like the DECIDE script', () => {
  it('does not count declines made before the velocity check toward velocity', async () => {
    const { userId, cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
    });
    // Three swipes declined while the card was frozen (DECIDE adds none of them to its velocity
    // window), then the user unfroze it.
    const recent = new Date(Date.now() - 10_000);
    for (let i = 0; i < 3; i++) await recordedDecision(userId, cardId, 'card_frozen', 0, recent);
    const d = deps({ VELOCITY_LIMIT_PER_MIN: '3' });
    expect((await decide(d, cardId, 1_000)).decision).toMatchObject({ approved: true, reason: 'approved' });
    // Declines for velocity, daily limit and credit did reach the check: they count (with the approval
    // just made, three).
    await recordedDecision(userId, cardId, 'insufficient_credit', 0, recent);
    await recordedDecision(userId, cardId, 'daily_limit', 0, recent);
    expect((await decide(d, cardId, 1_000)).decision).toMatchObject({
      approved: false,
      reason: 'velocity_limit',
    });
  });

  it("counts what today's decisions granted, increments of an authorization made yesterday included", async () => {
    const { userId, cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
      dailyLimitCents: 10_000n,
    });
    const today = new Date();
    const yesterday = new Date(Date.now() - 86_400_000);
    // A hotel authorization opened yesterday for 1,000 and incremented today by 8,000 (both approved).
    await services.database
      .sql`insert into authorizations (id, user_id, card_id, status, approved, requested_cents,
        approved_cents, held_cents, decision, decision_source, merchant_category_code, created_at)
      values ('iauth_hotel_1', ${userId}, ${cardId}, 'pending', true, 9000, 9000, 9000, 'approved', 'redis', '7011',
        ${yesterday})`;
    await recordedDecision(userId, cardId, 'approved', 1_000, yesterday, 'iauth_hotel_1');
    await recordedDecision(userId, cardId, 'approved', 8_000, today, 'iauth_hotel_1');
    const d = deps();
    expect((await decide(d, cardId, 2_001)).decision).toMatchObject({
      approved: false,
      reason: 'daily_limit',
    });
    expect((await decide(d, cardId, 2_000)).decision).toMatchObject({ approved: true, reason: 'approved' });
  });
});

describe('the fallback and its deadline', () => {
  it('rolls back a decision whose transaction is still open when the answer goes out', async () => {
    const { userId, cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
    });
    // The clock passes the deadline once the decision is made but before the transaction commits (the
    // fallback reads the clock once more, right before COMMIT): as if the commit came too late.
    let reads = 0;
    const startedAtMs = Date.now();
    const lateClock = () => {
      reads++;
      return reads >= 4 ? startedAtMs + 5_000 : Date.now();
    };
    const d = deps({}, lateClock);
    const event = authorizationRequestEvent.parse(authorizationRequest({ cardId, amountCents: 1_000 }));
    await expect(
      decideFromPostgres(d, event, '{}', newDecisionId(startedAtMs), startedAtMs, startedAtMs + 1_000),
    ).rejects.toBeInstanceOf(DeadlineError);
    const [rows] = await services.database.sql<{ decisions: number; fallback: number; holds: string }[]>`
      select (select count(*)::int from decisions where user_id = ${userId}) as decisions,
        (select count(*)::int from fallback_decisions where user_id = ${userId}) as fallback,
        (select holds_cents from credit_accounts where user_id = ${userId}) as holds`;
    expect(rows).toEqual({ decisions: 0, fallback: 0, holds: '0' });
  });
});

describe('the fallback replaying an earlier decision', () => {
  async function replayOf(eventId: string, d: FallbackDeps) {
    const base = authorizationRequest({ cardId: 'ic_replay', amountCents: 700 });
    const event = authorizationRequestEvent.parse({ ...base, id: eventId });
    const startedAtMs = d.now();
    return decideFromPostgres(d, event, '{}', newDecisionId(startedAtMs), startedAtMs, startedAtMs + 1_000);
  }

  it('answers a Redis approval again, but not while REDIS_WAIT_REPLICAS may still withdraw it', async () => {
    const { userId, cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
    });
    await recordedDecision(userId, cardId, 'approved', 700, new Date());
    const [row] = await services.database.sql<{ id: string; event_id: string }[]>`
      select id, event_id from decisions where user_id = ${userId}`;
    // Without the rule, the stored answer is the answer.
    const plain = await replayOf(row!.event_id, deps());
    expect(plain.decision).toMatchObject({
      approved: true,
      amountCents: 700n,
      decisionId: row!.id,
      replay: true,
    });
    // With it, a Redis approval copied into Postgres may have been withdrawn since (its WAIT came back
    // short): declined, same decision id, nothing granted.
    const waiting = await replayOf(row!.event_id, deps({ REDIS_WAIT_REPLICAS: '1' }));
    expect(waiting.grant).toBeNull();
    expect(waiting.decision).toMatchObject({
      approved: false,
      amountCents: 0n,
      reason: 'replication_unconfirmed',
      decisionId: row!.id,
      replay: true,
    });
  });
});

describe('the fallback and merchant names', () => {
  it('never seals: it queues the name with the row, in its transaction, as the hot path role', async () => {
    const url = new URL(services.databaseUrl);
    url.username = 'credana_hot_path';
    const hotPath = createDatabase({
      url: url.toString(),
      poolMax: 2,
      applicationName: 'fallback-names-test',
    });
    try {
      const { cardId } = await seedUser(services.database.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
      });
      const d = { ...deps(), sql: hotPath.sql };
      const authorizationId = `iauth_fallbacknames${Date.now()}`;
      expect((await decide(d, cardId, 1_000, { authorizationId })).decision.approved).toBe(true);
      // An increment on the same authorization updates the row; the name stays queued once.
      expect((await decide(d, cardId, 500, { authorizationId })).decision.approved).toBe(true);
      const [row] = await services.database.sql<{ held: string; sealed: Buffer | null; queued: string[] }[]>`
        select a.held_cents::text as held, a.merchant_name_sealed as sealed,
          array(select merchant_name from merchant_names_unsealed where authorization_id = a.id) as queued
        from authorizations a where a.id = ${authorizationId}`;
      expect(row).toEqual({ held: '1500', sealed: null, queued: ['TEST GROCER'] });
    } finally {
      await hotPath.close();
    }
  });
});

describe('the fallback racing the ledger writer for one event', () => {
  it('writes nothing of its own when the event’s decision is committed between its read and its insert, and answers it', async () => {
    const { userId, cardId } = await seedUser(services.database.sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
    });
    const event = authorizationRequestEvent.parse(authorizationRequest({ cardId, amountCents: 1_000 }));
    // The writer's decision for the same event, inserted but not yet committed: the fallback's read
    // does not see it, and its own insert waits on the unique index until this commits.
    const writer = await services.database.sql.reserve();
    try {
      await writer`begin`;
      await writer`insert into decisions (id, event_id, authorization_id, user_id, card_id, approved,
          requested_cents, approved_cents, reason, source, latency_us, decided_at)
        values (${`dec_writer_${event.id}`}, ${event.id}, ${event.data.object.id}, ${userId}, ${cardId}, true,
          1000, 1000, 'approved', 'redis', 100, now())`;
      const startedAtMs = Date.now();
      // A long deadline: the statement and lock timeouts it sets cannot end the wait first.
      const fallback = decideFromPostgres(
        deps(),
        event,
        '{}',
        newDecisionId(startedAtMs),
        startedAtMs,
        startedAtMs + 60_000,
      );
      for (;;) {
        const [waiting] = await services.database.sql<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity
          where wait_event_type = 'Lock' and query like '%insert into decisions%' and pid <> pg_backend_pid()`;
        if ((waiting?.n ?? 0) > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await writer`commit`;
      // The writer's decision, answered again: what Postgres and Redis both hold for this event.
      const answer = await fallback;
      expect(answer.decision).toEqual({
        approved: true,
        amountCents: 1000n,
        reason: 'approved',
        decisionId: `dec_writer_${event.id}`,
        source: 'postgres',
        replay: true,
      });
      expect(answer.grant).toBeNull();
    } finally {
      writer.release();
    }
    // Nothing of the fallback's decision survived: no hold, no authorization, no ref, no pending grant.
    const [rows] = await services.database.sql<
      { decisions: number; authorizations: number; transfers: number; fallback: number; holds: string }[]
    >`
      select (select count(*)::int from decisions where event_id = ${event.id}) as decisions,
        (select count(*)::int from authorizations where id = ${event.data.object.id}) as authorizations,
        (select count(*)::int from ledger_transfers where ref = ${`hold:${event.id}`}) as transfers,
        (select count(*)::int from fallback_decisions where event_id = ${event.id}) as fallback,
        (select holds_cents::text from credit_accounts where user_id = ${userId}) as holds`;
    expect(rows).toEqual({ decisions: 1, authorizations: 0, transfers: 0, fallback: 0, holds: '0' });
  });
});
