// Proves that a replay decided by the Postgres fallback does not override an answer Redis already gave
// (docs/chaos.md, bug 3): Redis approves a request; before the ledger writer has written that decision
// to Postgres, a replay of the same event reaches the fallback, which cannot see it and decides afresh
// under another decision id (declined `fallback_limit`, or a partial grant under its per-user cap). The
// fallback's decision is adopted (Redis keeps its own stored answer: another decision id), Stripe
// captures against the first approval, and the writer drains: Postgres books the capture (no dead
// letter) and ends equal to Redis. Real hot path, Redis, Postgres and ledger writer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newDecisionId } from '../hot-path/decision/engine.ts';
import { decideFromPostgres } from '../hot-path/decision/postgres-fallback.ts';
import { createRedisLease } from '../hot-path/decision/redis-lease.ts';
import { createDatabase } from '../shared/db/client.ts';
import { duplicateRedis } from '../shared/redis/client.ts';
import { deadLetterKey, userKeys } from '../shared/redis/keys.ts';
import { authorizationRequestEvent } from '../shared/stripe/events.ts';
import { conservationProblems } from '../test/support/conservation.ts';
import type { TestServices } from '../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../test/support/fixtures.ts';
import {
  type HotPath,
  type HotPathWorld,
  post,
  setUpHotPathWorld,
  testConfig,
  WETH_PRICE_E8,
} from '../test/support/hot-path.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from '../test/support/stripe.ts';
import { createLedgerWriterMetrics } from './metrics.ts';
import { waitForEmptyOutbox } from './testing.ts';
import { applyBatch, parseEntry } from './write-batch.ts';
import { createLedgerWriter } from './writer.ts';

let world: HotPathWorld;
let services: TestServices;
let hotPath: HotPath;
/** The writer's own role: its grants are part of what is under test (migration 0016). */
let writerDb: ReturnType<typeof createDatabase>;

beforeAll(async () => {
  world = await setUpHotPathWorld({ VELOCITY_LIMIT_PER_MIN: '1000' });
  ({ services, hotPath } = world);
  const url = new URL(services.databaseUrl);
  url.username = 'credana_ledger_writer';
  writerDb = createDatabase({ url: url.toString(), poolMax: 4, applicationName: 'fallback-replay-test' });
});

afterAll(async () => {
  await writerDb?.close();
  await world?.close();
});

const nowS = () => Math.floor(Date.now() / 1000);

async function deadLettersOf(userId: string): Promise<string[]> {
  const entries = await services.redis.xrange(deadLetterKey(services.prefix), '-', '+');
  return entries
    .map(([, fields]) => fields.join(' '))
    .filter((text) => text.includes(userId))
    .map((text) => text.slice(0, 200));
}

/**
 * Redis approves `amountCents`; the replay goes to the fallback (capped at `fallbackCapCents`), whose
 * decision is adopted; Stripe creates and captures the authorization at the first approval; then the
 * writer drains the outbox.
 */
async function replayDecidedByFallback(o: {
  amountCents: number;
  controllable: boolean;
  fallbackCapCents: number;
}) {
  const { sql } = services.database;
  const { userId, cardId } = await seedUser(sql, {
    collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, WETH_PRICE_E8) }],
  });
  const request = authorizationRequest({ cardId, amountCents: o.amountCents, controllable: o.controllable });
  const authorizationId = request.data.object.id;

  // The first delivery: decided from Redis, the record waits in the outbox (no writer runs yet).
  const first = await post(hotPath, '/stripe/authorizations', request);
  expect(first.json).toMatchObject({ approved: true, metadata: { reason: 'approved' } });
  const firstDecisionId = first.json.metadata?.decision_id;

  // The replay reaches a process cut off from Redis: its fallback finds no decision in Postgres and
  // decides afresh, under its own decision id.
  const settings = testConfig(services, { FALLBACK_GRANT_CENTS_MAX: String(o.fallbackCapCents) });
  const event = authorizationRequestEvent.parse(request);
  const startedAtMs = Date.now();
  const replay = await decideFromPostgres(
    { sql, market: hotPath.market, settings, now: Date.now, holder: hotPath.engine.lease.holder },
    event,
    JSON.stringify(request),
    newDecisionId(startedAtMs),
    startedAtMs,
    startedAtMs + 5_000,
  );
  expect(replay.decision.replay).toBe(false);
  expect(replay.decision.decisionId).not.toBe(firstDecisionId);

  // Redis comes back: a process catches up and adopts the fallback's decision.
  const lease = createRedisLease({
    sql,
    redis: services.redis,
    prefix: services.prefix,
    leaseMs: settings.REDIS_DECIDER_LEASE_MS,
    holder: `fallback-replay-test-${Date.now()}`,
  });
  expect(await lease.catchUp()).toBe(true);
  await lease.stop();
  // Redis still answers the first approval.
  const again = await post(hotPath, '/stripe/authorizations', request);
  expect(again.json).toMatchObject({ approved: true, metadata: { reason: 'approved' } });
  expect(again.json.metadata?.decision_id).toBe(firstDecisionId);

  // Stripe acted on the first approval: it creates the authorization and captures it in full.
  for (const body of [
    authorizationEvent({
      type: 'issuing_authorization.created',
      cardId,
      authorizationId,
      amountCents: o.amountCents,
      approved: true,
      status: 'pending',
      requestHistory: 0,
      createdS: nowS(),
    }),
    transactionEvent({
      cardId,
      type: 'capture',
      amountCents: o.amountCents,
      authorizationId,
      createdS: nowS(),
    }),
  ]) {
    expect((await post(hotPath, '/stripe/events', body)).status).toBe(200);
  }

  // The outbox as the writer first reads it, to deliver again afterwards.
  const outbox = await services.redis.xrange(userKeys(services.prefix, userId).outbox, '-', '+');
  const delivered = outbox.map(([id, fields]) => {
    const parsed = parseEntry({
      stream: userKeys(services.prefix, userId).outbox,
      id,
      fields: Object.fromEntries(fields.flatMap((f, i) => (i % 2 === 0 ? [[f, fields[i + 1] ?? '']] : []))),
    });
    if (!parsed.ok) throw new Error(parsed.error);
    return parsed.entry;
  });
  const writer = createLedgerWriter({
    redis: duplicateRedis(services.redis),
    sql: writerDb.sql,
    prefix: services.prefix,
    consumer: 'fallback-replay-test',
    batchMax: 50,
    batchWaitMs: 10,
    metrics: createLedgerWriterMetrics(),
  });
  await writer.start();
  try {
    await waitForEmptyOutbox(services.redis, services.prefix, 15_000);
  } finally {
    await writer.stop();
  }
  // A later replay the fallback answers: the one answer, from the decision row Redis's replaced.
  const later = Date.now();
  const third = await decideFromPostgres(
    { sql, market: hotPath.market, settings, now: Date.now, holder: hotPath.engine.lease.holder },
    event,
    JSON.stringify(request),
    newDecisionId(later),
    later,
    later + 5_000,
  );
  return { userId, authorizationId, firstDecisionId, delivered, third: third.decision };
}

describe('a replay decided by the fallback after Redis answered', () => {
  it('declined by the fallback (fallback_limit): Postgres books the capture of the Redis approval', async () => {
    const { userId, authorizationId, firstDecisionId, third } = await replayDecidedByFallback({
      amountCents: 16_948,
      controllable: false,
      fallbackCapCents: 1_000,
    });
    expect(third).toMatchObject({
      approved: true,
      amountCents: 16_948n,
      reason: 'approved',
      decisionId: firstDecisionId,
      replay: true,
    });
    const { sql } = services.database;
    expect(await deadLettersOf(userId)).toEqual([]);
    expect(await conservationProblems(sql, services.redis, services.prefix, [userId])).toEqual([]);
    const [row] = await sql<
      {
        approved: boolean;
        approved_cents: string;
        held_cents: string;
        captured_cents: string;
        decision_id: string;
      }[]
    >`select approved, approved_cents::text, held_cents::text, captured_cents::text, decision_id
      from authorizations where id = ${authorizationId}`;
    expect(row).toEqual({
      approved: true,
      approved_cents: '16948',
      held_cents: '0',
      captured_cents: '16948',
      decision_id: firstDecisionId,
    });
    const [account] = await sql<{ holds_cents: string; unsettled_cents: string }[]>`
      select holds_cents::text, unsettled_cents::text from credit_accounts where user_id = ${userId}`;
    expect(account).toEqual({ holds_cents: '0', unsettled_cents: '16948' });
  });

  it('granted in part by the fallback under a second decision id: Postgres follows the Redis approval', async () => {
    const { userId, authorizationId, firstDecisionId, delivered } = await replayDecidedByFallback({
      amountCents: 16_948,
      controllable: true,
      fallbackCapCents: 5_000,
    });
    const { sql } = services.database;
    expect(await deadLettersOf(userId)).toEqual([]);
    expect(await conservationProblems(sql, services.redis, services.prefix, [userId])).toEqual([]);
    const [row] = await sql<
      { approved_cents: string; held_cents: string; captured_cents: string; decision_id: string }[]
    >`select approved_cents::text, held_cents::text, captured_cents::text, decision_id
      from authorizations where id = ${authorizationId}`;
    expect(row).toEqual({
      approved_cents: '16948',
      held_cents: '0',
      captured_cents: '16948',
      decision_id: firstDecisionId,
    });
    // The ledger says how: the fallback's hold, then the correction to the Redis approval.
    const transfers = await sql<{ ref: string; hold: string }[]>`
      select t.ref, coalesce(sum(e.amount_cents) filter (where e.account = 'user_holds'), 0)::text as hold
      from ledger_transfers t left join ledger_entries e on e.transfer_id = t.id
      where t.authorization_id = ${authorizationId} and t.ref like 'hold:%' group by t.ref order by t.ref`;
    expect(transfers.map((t) => t.hold)).toEqual(['5000', '11948']);
    const [superseded] = await sql<{ n: number }[]>`select count(*)::int as n from audit_log
      where action = 'authorization.decision_superseded' and entity_id = ${authorizationId}`;
    expect(superseded?.n).toBe(1);

    // Delivered again (a writer restarted before its acknowledgement): nothing moves twice.
    expect(delivered.map((e) => e.item.kind)).toEqual(['decision', 'lifecycle', 'lifecycle']);
    expect(await applyBatch(writerDb.sql, delivered)).toEqual({ applied: 0, duplicates: 3 });
    expect(await conservationProblems(sql, services.redis, services.prefix, [userId])).toEqual([]);
    const [again] = await sql<{ n: number }[]>`select count(*)::int as n from audit_log
      where action = 'authorization.decision_superseded' and entity_id = ${authorizationId}`;
    expect(again?.n).toBe(1);
  });
});
