// Proves the ledger writer end to end on real Redis and Postgres: drives the real hot path through
// decisions, incremental, partial, declined, stand-in, capture, refund, release and expiry, drains the
// outbox and checks conservation (Postgres = Redis = ledger, balanced transfers, intact audit chain);
// then replays every entry (nothing doubles), feeds poison entries (dead-lettered, the rest written),
// and reads /metrics and /healthz. The writer runs with its default two lanes (lanes.test.ts checks that
// each user's entries stay in one lane, so one user's movements stay in stream order).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/observability/logger.ts';
import { createDependencyProbe, ledgerWriterReadiness } from '../shared/observability/readiness.ts';
import { duplicateRedis } from '../shared/redis/client.ts';
import { allOutboxKeys, deadLetterKey } from '../shared/redis/keys.ts';
import { conservationProblems } from '../test/support/conservation.ts';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../test/support/fixtures.ts';
import { type HotPath, post, startHotPath } from '../test/support/hot-path.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from '../test/support/stripe.ts';
import { createLedgerWriterApp } from './app.ts';
import { createLedgerWriterMetrics, type LedgerWriterMetrics } from './metrics.ts';
import { addEntry, captureFields, decisionFields, waitForEmptyOutbox } from './testing.ts';
import { createLedgerWriter, type LedgerWriter } from './writer.ts';

const PRICE = 300_000_000_000n;
const nowS = () => Math.floor(Date.now() / 1000);
let services: TestServices;
let hotPath: HotPath;
let writer: LedgerWriter | null = null;
let metrics: LedgerWriterMetrics;
const users: string[] = [];

beforeAll(async () => {
  services = await setUpServices();
  await seedAsset(services.database.sql, services.redis, services.prefix, WETH, PRICE, nowS());
  // Generous budgets: this file is about the writer, and a loaded test machine must not push decisions
  // onto the Postgres fallback (which writes Postgres directly, not through the outbox).
  hotPath = await startHotPath(services, { DECISION_BUDGET_MS: '1900', REDIS_COMMAND_TIMEOUT_MS: '1500' });
});
afterAll(async () => {
  await writer?.stop();
  await hotPath?.close();
  await services?.close();
});

async function startWriter(): Promise<LedgerWriter> {
  metrics = createLedgerWriterMetrics();
  const w = createLedgerWriter({
    redis: duplicateRedis(services.redis),
    sql: services.sqlFor('credana_ledger_writer'),
    prefix: services.prefix,
    consumer: 'test-writer',
    batchMax: 50,
    batchWaitMs: 20,
    metrics,
  });
  await w.start();
  return w;
}

const drained = (timeoutMs = 15_000) => waitForEmptyOutbox(services.redis, services.prefix, timeoutMs);

async function snapshotEntries(): Promise<string[][]> {
  const all: string[][] = [];
  for (const key of allOutboxKeys(services.prefix)) {
    for (const [, fields] of await services.redis.xrange(key, '-', '+')) all.push([key, ...fields]);
  }
  return all;
}

async function books() {
  const [row] = await services.database.sql`select
      (select count(*)::int from decisions) as decisions,
      (select count(*)::int from card_events) as events,
      (select count(*)::int from ledger_transfers) as transfers,
      (select count(*)::int from ledger_entries) as entries,
      (select count(*)::int from audit_log) as audits,
      (select coalesce(sum(holds_cents), 0)::text from credit_accounts) as holds,
      (select coalesce(sum(unsettled_cents), 0)::text from credit_accounts) as unsettled,
      (select string_agg(id || ':' || status || ':' || requested_cents || ':' || approved_cents || ':' || held_cents || ':' || captured_cents, ',' order by id) from authorizations) as auths`;
  return row!;
}

let replayable: string[][] = [];

describe('ledger writer on the real hot path', () => {
  it('writes every outcome of the hot path so that Postgres, Redis and the ledger agree', async () => {
    const { sql } = services.database;
    const collateral = [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }];
    const a = await seedUser(sql, { collateral });
    const b = await seedUser(sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(4_000n, PRICE) }],
    });
    users.push(a.userId, b.userId);
    const request = (body: unknown) => post(hotPath, '/stripe/authorizations', body);
    const event = (body: unknown) => post(hotPath, '/stripe/events', body);
    const t = nowS();

    // A: request, created, incremental, capture (partial of the hold), closed, refund.
    const auth1 = 'iauth_a1';
    const first = await request(
      authorizationRequest({ cardId: a.cardId, amountCents: 5_000, authorizationId: auth1 }),
    );
    expect(first.json.metadata?.reason).toBe('approved');
    await event(
      authorizationEvent({
        type: 'issuing_authorization.created',
        cardId: a.cardId,
        authorizationId: auth1,
        amountCents: 5_000,
        approved: true,
        status: 'pending',
        requestHistory: 1,
        createdS: t,
      }),
    );
    expect(
      (
        await request(
          authorizationRequest({
            cardId: a.cardId,
            amountCents: 2_000,
            authorizationId: auth1,
            requestHistory: 1,
          }),
        )
      ).json.approved,
    ).toBe(true);
    const capture = transactionEvent({
      cardId: a.cardId,
      type: 'capture',
      amountCents: 6_000,
      authorizationId: auth1,
      createdS: t + 1,
    });
    await event(capture);
    await event(capture); // a duplicate delivery: no second entry
    await event(
      authorizationEvent({
        type: 'issuing_authorization.updated',
        cardId: a.cardId,
        authorizationId: auth1,
        amountCents: 7_000,
        approved: true,
        status: 'closed',
        requestHistory: 2,
        createdS: t + 2,
      }),
    );
    await event(
      transactionEvent({
        cardId: a.cardId,
        type: 'refund',
        amountCents: 1_000,
        authorizationId: auth1,
        createdS: t + 3,
      }),
    );
    // A: approved then reversed; a declined request (blocked MCC); a stand-in approval; a force capture.
    await request(
      authorizationRequest({ cardId: a.cardId, amountCents: 3_000, authorizationId: 'iauth_a2' }),
    );
    await event(
      authorizationEvent({
        type: 'issuing_authorization.updated',
        cardId: a.cardId,
        authorizationId: 'iauth_a2',
        amountCents: 3_000,
        approved: true,
        status: 'reversed',
        requestHistory: 1,
        createdS: t + 4,
      }),
    );
    expect(
      (
        await request(
          authorizationRequest({
            cardId: a.cardId,
            amountCents: 100,
            mcc: '7995',
            authorizationId: 'iauth_declined',
          }),
        )
      ).json.approved,
    ).toBe(false);
    await event(
      authorizationEvent({
        type: 'issuing_authorization.created',
        cardId: a.cardId,
        authorizationId: 'iauth_standin',
        amountCents: 1_500,
        approved: true,
        status: 'pending',
        requestHistory: 0,
        createdS: t + 5,
      }),
    );
    await event(
      transactionEvent({
        cardId: a.cardId,
        type: 'capture',
        amountCents: 800,
        authorizationId: null,
        createdS: t + 6,
      }),
    );
    // B: a partial approval that is left open, and one that expires.
    const partial = await request(
      authorizationRequest({
        cardId: b.cardId,
        amountCents: 3_000,
        authorizationId: 'iauth_b1',
        controllable: true,
      }),
    );
    expect(partial.json.approved).toBe(true);
    const rest = await request(
      authorizationRequest({
        cardId: b.cardId,
        amountCents: 2_500,
        authorizationId: 'iauth_b2',
        controllable: true,
      }),
    );
    expect(rest.json.amount).toBe(1_000);
    expect((await hotPath.lifecycle.expireHold(b.userId, 'iauth_b1')).applied).toBe(true);
    // A card nobody owns.
    await request(authorizationRequest({ cardId: 'ic_nobody', amountCents: 100 }));

    replayable = await snapshotEntries();
    expect(replayable.length).toBe(15);
    writer = await startWriter();
    await drained();

    expect(await conservationProblems(sql, services.redis, services.prefix, users)).toEqual([]);
    const auths =
      await sql`select id, status, approved, requested_cents, approved_cents, held_cents, captured_cents, decision, decision_source
      from authorizations order by id`;
    expect(auths).toEqual([
      {
        id: 'iauth_a1',
        status: 'closed',
        approved: true,
        requested_cents: '7000',
        approved_cents: '7000',
        held_cents: '0',
        captured_cents: '6000',
        decision: 'approved',
        decision_source: 'redis',
      },
      {
        id: 'iauth_a2',
        status: 'reversed',
        approved: true,
        requested_cents: '3000',
        approved_cents: '3000',
        held_cents: '0',
        captured_cents: '0',
        decision: 'approved',
        decision_source: 'redis',
      },
      {
        id: 'iauth_b1',
        status: 'expired',
        approved: true,
        requested_cents: '3000',
        approved_cents: '3000',
        held_cents: '0',
        captured_cents: '0',
        decision: 'approved',
        decision_source: 'redis',
      },
      {
        id: 'iauth_b2',
        status: 'pending',
        approved: true,
        requested_cents: '2500',
        approved_cents: '1000',
        held_cents: '1000',
        captured_cents: '0',
        decision: 'partial',
        decision_source: 'redis',
      },
      {
        id: 'iauth_declined',
        status: 'pending',
        approved: false,
        requested_cents: '100',
        approved_cents: '0',
        held_cents: '0',
        captured_cents: '0',
        decision: 'declined',
        decision_source: 'redis',
      },
      {
        id: 'iauth_standin',
        status: 'pending',
        approved: true,
        requested_cents: '1500',
        approved_cents: '1500',
        held_cents: '1500',
        captured_cents: '0',
        decision: 'stripe',
        decision_source: 'stripe',
      },
    ]);
    const [a0] =
      await sql`select holds_cents, unsettled_cents from credit_accounts where user_id = ${a.userId}`;
    expect(a0).toEqual({ holds_cents: '1500', unsettled_cents: '5800' });
    const counts = await books();
    expect(counts).toMatchObject({ decisions: 7, events: 15 });
    // hold×5 (a1, a1 incr, a2, b1, b2) + a1 capture, a1 release, refund, a2 release, stand-in, force capture, b1 expiry.
    expect(counts).toMatchObject({ transfers: 12, audits: 12 });
    expect(await services.redis.xlen(deadLetterKey(services.prefix))).toBe(0);
  });

  it('doubles nothing when every entry is delivered again', async () => {
    expect(replayable.length).toBeGreaterThan(0);
    const before = await books();
    for (const [key, ...fields] of replayable) await services.redis.xadd(key!, '*', ...fields);
    await drained();
    expect(await books()).toEqual(before);
    expect(await conservationProblems(services.database.sql, services.redis, services.prefix, users)).toEqual(
      [],
    );
    const text = await metrics.registry.getSingleMetricAsString('credana_ledger_entries_written_total');
    expect(text).toContain('credana_ledger_entries_written_total{result="duplicate"} 15');
  });

  it('dead-letters poison entries with their error and writes the others', async () => {
    const { sql } = services.database;
    const user = await seedUser(sql);
    const good = [1, 2, 3].map(() =>
      decisionFields({ userId: user.userId, cardId: user.cardId, grantedCents: 100n }),
    );
    await addEntry(services.redis, services.prefix, user.userId, good[0]!);
    await addEntry(services.redis, services.prefix, user.userId, ['r', '{"kind":"decision"', 'ok', '1']); // not JSON
    await addEntry(services.redis, services.prefix, user.userId, good[1]!);
    // Records whose Stripe event Postgres cannot archive: one not JSON (only Postgres parses it, into
    // card_events' jsonb), one JSON with a \u0000 that jsonb refuses (22P05). Their holds are written all
    // the same; only the archive is dead-lettered.
    const badEvent = decisionFields({ userId: user.userId, cardId: user.cardId, grantedCents: 70n });
    const record = JSON.parse(badEvent[1]!) as Record<string, unknown>;
    badEvent[1] = JSON.stringify({ ...record, event: '{"id": "evt_truncated' });
    await addEntry(services.redis, services.prefix, user.userId, badEvent);
    const nulEvent = decisionFields({
      userId: user.userId,
      cardId: user.cardId,
      grantedCents: 9n,
      event: JSON.stringify({ id: 'evt_nul', merchant_data: { name: 'CAF\u0000E' } }),
    });
    await addEntry(services.redis, services.prefix, user.userId, nulEvent);
    // Valid in form, but for a user Postgres has never heard of: every insert of it fails (23503).
    await addEntry(
      services.redis,
      services.prefix,
      user.userId,
      decisionFields({ userId: crypto.randomUUID(), cardId: 'ic_x', grantedCents: 50n }),
    );
    await addEntry(services.redis, services.prefix, user.userId, good[2]!);
    await drained(20_000);
    const dead = await services.redis.xrange(deadLetterKey(services.prefix), '-', '+');
    expect(dead.length).toBe(4);
    const field = (fields: string[], name: string) => fields[fields.indexOf(name) + 1];
    // Found in any order: the user-less entry may fall in the other lane (lanes.ts laneOf).
    const kinds = dead.map(([, fields]) => {
      const e = field(fields, 'error');
      const problem = field(fields, 'problem');
      if (e?.includes('not JSON')) return `${problem} record`;
      if (e?.includes('22P02')) return `${problem} event json`; // invalid input syntax for type json
      if (e?.includes('22P05')) return `${problem} event nul`; // unsupported Unicode escape sequence
      if (e?.startsWith('23503')) return `${problem} fk`;
      return e;
    });
    expect(kinds.sort()).toEqual(['archive event json', 'archive event nul', 'failed fk', 'invalid record']);
    // The three good holds and the two whose archive failed.
    const [row] = await sql`select holds_cents from credit_accounts where user_id = ${user.userId}`;
    expect(row).toEqual({ holds_cents: '379' });
    const [archived] = await sql<{ n: number }[]>`
      select count(*)::int as n from card_events where user_id = ${user.userId}`;
    expect(archived?.n).toBe(3);
    const counted = await metrics.registry.getSingleMetricAsString('credana_ledger_dead_lettered_total');
    expect(counted).toContain('problem="invalid"} 1');
    expect(counted).toContain('problem="failed"} 1');
    expect(counted).toContain('problem="archive"} 2');
  });

  it('dead-letters a lifecycle record carrying another user than its authorization’s, moving no money', async () => {
    const { sql } = services.database;
    const owner = await seedUser(sql);
    const other = await seedUser(sql);
    const authorizationId = `iauth_${crypto.randomUUID()}`;
    await addEntry(
      services.redis,
      services.prefix,
      owner.userId,
      decisionFields({ ...owner, authorizationId, grantedCents: 4_000n }),
    );
    await addEntry(
      services.redis,
      services.prefix,
      other.userId,
      decisionFields({ ...other, grantedCents: 9_000n }),
    );
    await drained();
    const accounts = () =>
      sql`select user_id, holds_cents, unsettled_cents from credit_accounts
        where user_id in (${owner.userId}, ${other.userId}) order by user_id`;
    const before = await accounts();
    const deadBefore = await services.redis.xlen(deadLetterKey(services.prefix));
    // The owner's capture, booked to the other user by a wrong card → user view.
    await addEntry(
      services.redis,
      services.prefix,
      other.userId,
      captureFields({ ...other, authorizationId, amountCents: 4_000n, heldBeforeCents: 4_000n }),
    );
    await drained(20_000);
    const dead = await services.redis.xrange(deadLetterKey(services.prefix), '-', '+');
    expect(dead.length).toBe(deadBefore + 1);
    const fields = dead[dead.length - 1]![1];
    expect(fields[fields.indexOf('problem') + 1]).toBe('failed');
    expect(fields[fields.indexOf('error') + 1]).toMatch(/^authorization_user_mismatch: /);
    expect(await accounts()).toEqual(before);
    const [auth] =
      await sql`select user_id, held_cents, captured_cents from authorizations where id = ${authorizationId}`;
    expect(auth).toEqual({ user_id: owner.userId, held_cents: '4000', captured_cents: '0' });
  });

  it('writes a trickle of entries in a few batches: a batch that is not full waits batchWaitMs for more', async () => {
    const user = await seedUser(services.database.sql);
    const batches = async () =>
      (await metrics.batchSize.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    const before = await batches();
    // 20 entries, one every 2 ms for one user (one lane): about 40 ms of trickle. Read as they come,
    // each would be a transaction of its own; gathered for 20 ms, they make a handful.
    const trickleStarted = performance.now();
    for (let i = 0; i < 20; i++) {
      await addEntry(
        services.redis,
        services.prefix,
        user.userId,
        decisionFields({ userId: user.userId, cardId: user.cardId, grantedCents: 10n }),
      );
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const trickleMs = performance.now() - trickleStarted;
    await drained();
    // One batch per 20 ms window of the trickle (plus the edges) — not one per entry. On a loaded
    // machine the trickle stretches and so does the bound.
    expect((await batches()) - before).toBeLessThanOrEqual(Math.ceil(trickleMs / 20) + 2);
    const [row] = await services.database
      .sql`select holds_cents from credit_accounts where user_id = ${user.userId}`;
    expect(row).toEqual({ holds_cents: '200' });
  });

  it('serves /metrics with lag, throughput, dead letters and batch durations (public port: only with the token), /healthz and /readyz', async () => {
    const readiness = ledgerWriterReadiness(
      createDependencyProbe({
        redis: services.redis,
        sql: services.sqlFor('credana_ledger_writer'),
        registry: metrics.registry,
      }),
    );
    const logger = createLogger('silent', 'ledger-writer');
    const app = createLedgerWriterApp({ writer: writer!, metrics, readiness, logger, access: 'open' });
    const text = await (await app.request('/metrics')).text();
    for (const name of [
      'credana_ledger_lag_ms',
      'credana_ledger_entries_written_total',
      'credana_ledger_dead_lettered_total',
      'credana_ledger_batch_duration_seconds_bucket',
    ]) {
      expect(text).toContain(name);
    }
    expect(text).toContain('credana_dependency_up{dependency="postgres"} 1');
    const ready = await app.request('/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, redis: true, postgres: true });
    // The public port (QUEUE_DRIVER=qstash) refuses /metrics without the token.
    const token = 't'.repeat(32);
    const publicApp = createLedgerWriterApp({
      writer: writer!,
      metrics,
      readiness,
      logger,
      access: { token },
    });
    expect((await publicApp.request('/metrics')).status).toBe(404);
    expect((await publicApp.request('/metrics', { headers: { authorization: 'Bearer wrong' } })).status).toBe(
      404,
    );
    expect(
      (await publicApp.request('/metrics', { headers: { authorization: `Bearer ${token}` } })).status,
    ).toBe(200);
    const health = await app.request('/healthz');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, state: 'running' });
    await writer!.stop();
    expect((await app.request('/healthz')).status).toBe(503);
    writer = null;
  });
});
