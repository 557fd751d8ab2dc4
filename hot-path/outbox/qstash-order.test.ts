// Proves the QStash transport keeps the stream writer's promises although QStash repeats and reorders: real hot-path entries published by the relay and delivered (signed, to the real receiver) in reversed and shuffled order with duplicates leave Postgres exactly as the real stream writer leaves a second database for the same entries; and the relay deletes no entry before it is written — with the writer unreachable the entries stay in the stream, and after that relay stops a second one re-publishes them, written exactly once; an entry too large to send is dead-lettered and does not block its shard; a head entry Postgres rejects is retried (500, its successors 409) and dead-lettered after repeated data errors.
import { serve } from '@hono/node-server';
import { Client, Receiver } from '@upstash/qstash';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLedgerWriterMetrics } from '../../ledger-writer/metrics.ts';
import { createQStashReceiverApp } from '../../ledger-writer/qstash-receiver.ts';
import { addEntry, decisionFields, outboxBacklog, waitForEmptyOutbox } from '../../ledger-writer/testing.ts';
import { createLedgerWriter } from '../../ledger-writer/writer.ts';
import type { Sql } from '../../shared/db/client.ts';
import { deadLetterMember } from '../../shared/outbox/dead-letters.ts';
import { outboxLimits } from '../../shared/outbox/limits.ts';
import { HOLD_EXPIRY_DEFAULTS } from '../../shared/policy/hold-expiry.ts';
import { allOutboxKeys, deadLetterKey, userDeadLettersKey, userKeys } from '../../shared/redis/keys.ts';
import { conservationProblems } from '../../test/support/conservation.ts';
import { connectRedis, setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedUser, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { type HotPath, post, setUpServicesWithWeth, startHotPath } from '../../test/support/hot-path.ts';
import { freePort } from '../../test/support/processes.ts';
import { qstashSignature, qstashStandIn } from '../../test/support/qstash.ts';
import { authorizationEvent, authorizationRequest, transactionEvent } from '../../test/support/stripe.ts';
import { createQStashRelay } from './qstash-relay.ts';

const CURRENT = 'sig_current_signing_key_for_order_1';
const NEXT = 'sig_next_signing_key_for_order_0002';
const PRICE = 300_000_000_000n;
const APPLY = { holdExpiry: HOLD_EXPIRY_DEFAULTS };
let services: TestServices;
let hotPath: HotPath;

beforeAll(async () => {
  services = await setUpServicesWithWeth();
  hotPath = await startHotPath(services, { VELOCITY_LIMIT_PER_MIN: '10000' });
});
afterAll(async () => {
  await hotPath?.close();
  await services?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowS = () => Math.floor(Date.now() / 1000);

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A card's life with dependent entries: hold, Stripe's created, increment, capture, close, refund, a reversal. */
async function cardLife(cardId: string, tag: string): Promise<void> {
  const request = async (body: unknown) => (await post(hotPath, '/stripe/authorizations', body)).json;
  const event = async (body: unknown) =>
    expect((await post(hotPath, '/stripe/events', body)).status).toBe(200);
  const t = nowS();
  const auth1 = `iauth_${tag}1`;
  const auth2 = `iauth_${tag}2`;
  expect(
    (await request(authorizationRequest({ cardId, amountCents: 5_000, authorizationId: auth1 }))).approved,
  ).toBe(true);
  await event(
    authorizationEvent({
      type: 'issuing_authorization.created',
      cardId,
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
        authorizationRequest({ cardId, amountCents: 2_000, authorizationId: auth1, requestHistory: 1 }),
      )
    ).approved,
  ).toBe(true);
  await event(
    transactionEvent({
      cardId,
      type: 'capture',
      amountCents: 6_000,
      authorizationId: auth1,
      createdS: t + 1,
    }),
  );
  await event(
    authorizationEvent({
      type: 'issuing_authorization.updated',
      cardId,
      authorizationId: auth1,
      amountCents: 7_000,
      approved: true,
      status: 'closed',
      requestHistory: 2,
      createdS: t + 2,
    }),
  );
  await event(
    transactionEvent({ cardId, type: 'refund', amountCents: 1_000, authorizationId: auth1, createdS: t + 3 }),
  );
  expect(
    (await request(authorizationRequest({ cardId, amountCents: 3_000, authorizationId: auth2 }))).approved,
  ).toBe(true);
  await event(
    authorizationEvent({
      type: 'issuing_authorization.updated',
      cardId,
      authorizationId: auth2,
      amountCents: 3_000,
      approved: true,
      status: 'reversed',
      requestHistory: 1,
      createdS: t + 4,
    }),
  );
}

/** What the ledger holds for these users, without timestamps or generated ids. */
async function books(sql: Sql, userIds: string[]) {
  return {
    accounts: await sql`select user_id, holds_cents::text, unsettled_cents::text from credit_accounts
      where user_id in ${sql(userIds)} order by user_id`,
    authorizations: await sql`select id, user_id, status, approved, decision, requested_cents::text,
        approved_cents::text, held_cents::text, captured_cents::text
      from authorizations where user_id in ${sql(userIds)} order by id`,
    decisions:
      await sql`select event_id, authorization_id, approved, requested_cents::text, approved_cents::text, reason
      from decisions where user_id in ${sql(userIds)} order by event_id`,
    events:
      await sql`select id, type, object_id from card_events where user_id in ${sql(userIds)} order by id`,
    transfers: await sql`select t.ref, t.kind, e.account, e.amount_cents::text
      from ledger_transfers t join ledger_entries e on e.transfer_id = t.id
      where t.user_id in ${sql(userIds)} order by t.ref, e.account, e.amount_cents`,
  };
}

/** Copies the users' rows the ledger refers to into another database. */
async function copyUsers(from: Sql, to: Sql, userIds: string[]): Promise<void> {
  const users =
    await from`select id, credit_limit_cents, daily_limit_cents, blocked_mccs from users where id in ${from(userIds)}`;
  await to`insert into users ${to(users)}`;
  const cards = await from`select id, user_id, status, frozen from cards where user_id in ${from(userIds)}`;
  await to`insert into cards ${to(cards)}`;
  await to`insert into credit_accounts (user_id) select unnest(${userIds}::uuid[])`;
}

/** Every entry of every outbox stream of the prefix, as [stream index, id, flat fields]. */
async function streamContents(prefix: string): Promise<[number, string, string[]][]> {
  const out: [number, string, string[]][] = [];
  const keys = allOutboxKeys(prefix);
  for (let i = 0; i < keys.length; i++) {
    for (const [id, fields] of await services.redis.xrange(keys[i]!, '-', '+')) out.push([i, id, fields]);
  }
  return out;
}

/** A deterministic shuffle (mulberry32), so a failure can be replayed. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  let a = seed >>> 0;
  const random = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('QStash transport keeps the stream writer’s order and exactly-once', () => {
  it('ends, after reversed and shuffled deliveries with duplicates, exactly where the stream writer ends', async () => {
    const { sql } = services.database;
    const userIds: string[] = [];
    for (const tag of ['ra', 'rb', 'rc']) {
      const { userId, cardId } = await seedUser(sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
      });
      userIds.push(userId);
      await cardLife(cardId, tag);
    }
    const entries = await streamContents(services.prefix);
    expect(entries.length).toBe(3 * 8);

    // The reference: the real stream writer drains a copy of the same entries into a second database.
    const reference = await setUpServices();
    const writerRedis = connectRedis(reference);
    try {
      await copyUsers(sql, reference.database.sql, userIds);
      const refKeys = allOutboxKeys(reference.prefix);
      for (const [i, id, fields] of entries) await reference.redis.xadd(refKeys[i]!, id, ...fields);
      const writer = createLedgerWriter({
        redis: writerRedis,
        sql: reference.sqlFor('credana_ledger_writer'),
        prefix: reference.prefix,
        consumer: 'reference',
        batchMax: 500,
        batchWaitMs: 10,
        metrics: createLedgerWriterMetrics(),
        apply: APPLY,
      });
      await writer.start();
      await waitForEmptyOutbox(reference.redis, reference.prefix, 15_000);
      await writer.stop();
      const expected = await books(reference.database.sql, userIds);
      expect(expected.decisions.length).toBe(3 * 3);

      // The relay publishes everything; QStash accepted but has not delivered yet.
      const url = 'https://writer.example/qstash';
      const standIn = await qstashStandIn(null);
      const relayRedis = connectRedis(services);
      const relay = createQStashRelay({
        redis: relayRedis,
        client: new Client({ token: 'qstash_test_token_order', baseUrl: standIn.baseUrl }),
        prefix: services.prefix,
        destinationUrl: url,
        consumer: 'order-relay',
        batchMax: 100,
        blockMs: 10,
      });
      await relay.start();
      try {
        await until(async () => relay.published === entries.length, 'every entry published');
        const bodies = standIn.published.map((p) => p.body);
        const app = createQStashReceiverApp({
          receiver: new Receiver({ currentSigningKey: CURRENT, nextSigningKey: NEXT }),
          sql,
          redis: services.redis,
          prefix: services.prefix,
          publicUrl: url,
          apply: APPLY,
        });
        const deliver = async (body: string) =>
          (
            await app.request('/qstash', {
              method: 'POST',
              body,
              headers: { 'upstash-signature': await qstashSignature(CURRENT, url, body) },
            })
          ).status;
        // Like QStash: every message is retried until answered 2xx; rounds alternate reversed and
        // shuffled order, and some delivered messages arrive a second time.
        let pending = bodies.map((_, i) => i);
        const statuses = new Map<number, number>();
        for (let round = 0; pending.length > 0 && round <= bodies.length + 1; round++) {
          const order = round % 2 === 0 ? [...pending].reverse() : shuffled(pending, round);
          const left: number[] = [];
          for (const i of order) {
            const status = await deliver(bodies[i]!);
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
            if (status !== 200) left.push(i);
            else if ((i + round) % 2 === 0) expect(await deliver(bodies[i]!)).toBe(200);
          }
          pending = left.sort((a, b) => a - b);
        }
        // Every message once more, late: all duplicates.
        for (const body of shuffled(bodies, 99)) await deliver(body);

        expect(await books(sql, userIds)).toEqual(expected);
        expect(pending).toEqual([]);
        // Early arrivals were turned away (409, retried), never applied out of order or refused.
        expect([...statuses.keys()].sort()).toEqual([200, 409]);
        expect(await conservationProblems(sql, services.redis, services.prefix, userIds)).toEqual([]);
        expect(await services.redis.xlen(deadLetterKey(services.prefix))).toBe(0);
        // Applied, so the relay now acknowledges and deletes them.
        await waitForEmptyOutbox(services.redis, services.prefix, 5_000);
      } finally {
        await relay.stop();
        relayRedis.disconnect();
        await standIn.close();
      }
    } finally {
      writerRedis.disconnect();
      await reference.close();
    }
  });

  it('deletes no entry before it is written; a second relay re-publishes what the first left, written once', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql, {
      collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(100_000n, PRICE) }],
    });
    const before = await outboxBacklog(services.redis, services.prefix);
    expect(before).toBe(0);
    for (let i = 0; i < 6; i++) {
      const res = await post(
        hotPath,
        '/stripe/authorizations',
        authorizationRequest({ cardId, amountCents: 1_000 + i, authorizationId: `iauth_dl${i}` }),
      );
      expect(res.json.approved).toBe(true);
    }
    await post(
      hotPath,
      '/stripe/events',
      authorizationEvent({
        type: 'issuing_authorization.updated',
        cardId,
        authorizationId: 'iauth_dl0',
        amountCents: 1_000,
        approved: true,
        status: 'reversed',
        requestHistory: 1,
        createdS: nowS(),
      }),
    );
    const total = await outboxBacklog(services.redis, services.prefix);
    expect(total).toBe(7);

    const port = await freePort();
    const url = `http://127.0.0.1:${port}/qstash`;
    // QStash accepts every publish, but the writer is unreachable: it would retry, then give up.
    const standIn = await qstashStandIn(null);
    const relayOptions = {
      client: new Client({ token: 'qstash_test_token_ack', baseUrl: standIn.baseUrl }),
      prefix: services.prefix,
      destinationUrl: url,
      batchMax: 100,
      blockMs: 10,
      republishIdleMs: 1_000,
    };
    const firstRedis = connectRedis(services);
    const first = createQStashRelay({
      ...relayOptions,
      redis: firstRedis,
      consumer: 'relay-1',
    });
    await first.start();
    await until(async () => first.published === total, 'the first relay published everything');
    await sleep(700); // many acknowledgement rounds
    await first.stop();
    firstRedis.disconnect();
    // Published is not written: everything is still in the stream, nothing in Postgres.
    expect(await outboxBacklog(services.redis, services.prefix)).toBe(total);
    const [none] = await sql<
      { n: number }[]
    >`select count(*)::int as n from decisions where user_id = ${userId}`;
    expect(none?.n).toBe(0);

    // The writer is back; QStash has given up on the first publishes. A second relay takes over.
    const writerApp = createQStashReceiverApp({
      receiver: new Receiver({ currentSigningKey: CURRENT, nextSigningKey: NEXT }),
      sql,
      redis: services.redis,
      prefix: services.prefix,
      publicUrl: url,
      apply: APPLY,
    });
    const server = serve({ fetch: writerApp.fetch, port, hostname: '127.0.0.1' });
    const firstPublishes = standIn.published.length;
    standIn.setDeliver(async (destination, body) => {
      // At least once: every message twice.
      for (let i = 0; i < 2; i++) {
        await fetch(destination, {
          method: 'POST',
          body,
          headers: {
            'content-type': 'application/json',
            'upstash-signature': await qstashSignature(CURRENT, destination, body),
          },
        });
      }
    });
    const secondRedis = connectRedis(services);
    const second = createQStashRelay({
      ...relayOptions,
      redis: secondRedis,
      consumer: 'relay-2',
    });
    await second.start();
    try {
      await waitForEmptyOutbox(services.redis, services.prefix, 15_000);
      const republished = standIn.published.slice(firstPublishes);
      expect(republished.length).toBeGreaterThanOrEqual(total);
      // A new deduplication id: QStash keeps the old ones and would drop the re-publish.
      for (const p of republished) expect(String(p.headers['upstash-deduplication-id'])).toMatch(/-r\d+$/);
      const [decisions] = await sql<
        { n: number }[]
      >`select count(*)::int as n from decisions where user_id = ${userId}`;
      expect(decisions?.n).toBe(6);
      const [transfers] = await sql<
        { n: number }[]
      >`select count(*)::int as n from ledger_transfers where user_id = ${userId}`;
      expect(transfers?.n).toBe(7);
      expect(await conservationProblems(sql, services.redis, services.prefix, [userId])).toEqual([]);
    } finally {
      await second.stop();
      secondRedis.disconnect();
      server.close();
      await standIn.close();
    }
  });

  it('dead-letters an entry too large to send and moves its shard on to the next entry', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql, {});
    const stream = userKeys(services.prefix, userId).outbox;
    const deadBefore = await services.redis.xlen(deadLetterKey(services.prefix));
    // Over the receiver's body limit; under it but over this QStash plan's message size; then a normal one.
    const overLimit = await addEntry(services.redis, services.prefix, userId, [
      'r',
      'x'.repeat(outboxLimits.qstashBodyBytesMax),
    ]);
    const overPlan = await addEntry(services.redis, services.prefix, userId, ['r', 'y'.repeat(2_000_000)]);
    const eventId = `evt_after_large_${Date.now()}`;
    await addEntry(
      services.redis,
      services.prefix,
      userId,
      decisionFields({ userId, cardId, grantedCents: 0n, requestedCents: 700n, eventId }),
    );
    const url = 'https://writer.example/qstash';
    const app = createQStashReceiverApp({
      receiver: new Receiver({ currentSigningKey: CURRENT, nextSigningKey: NEXT }),
      sql,
      redis: services.redis,
      prefix: services.prefix,
      publicUrl: url,
      apply: APPLY,
    });
    const standIn = await qstashStandIn(async (_destination, body) => {
      await app.request('/qstash', {
        method: 'POST',
        body,
        headers: { 'upstash-signature': await qstashSignature(CURRENT, url, body) },
      });
    }, 1_000_000);
    const relayRedis = connectRedis(services);
    const relay = createQStashRelay({
      redis: relayRedis,
      client: new Client({ token: 'qstash_test_token_large', baseUrl: standIn.baseUrl }),
      prefix: services.prefix,
      destinationUrl: url,
      consumer: 'large-relay',
      batchMax: 100,
      blockMs: 10,
    });
    await relay.start();
    try {
      await waitForEmptyOutbox(services.redis, services.prefix, 15_000);
      const [decision] = await sql<
        { n: number }[]
      >`select count(*)::int as n from decisions where event_id = ${eventId}`;
      expect(decision?.n).toBe(1);
      const dead = await services.redis.xrange(deadLetterKey(services.prefix), '-', '+');
      const fresh = dead.slice(deadBefore).map(([, flat]) => {
        const fields: Record<string, string> = {};
        for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!;
        return fields;
      });
      expect(fresh.map((f) => [f['stream'], f['id'], f['problem'], f['f:r']?.length])).toEqual([
        [stream, overLimit, 'too_large', outboxLimits.qstashBodyBytesMax],
        [stream, overPlan, 'too_large', 2_000_000],
      ]);
      for (const p of standIn.published) expect(Buffer.byteLength(p.body)).toBeLessThanOrEqual(1_000_000);
    } finally {
      await relay.stop();
      relayRedis.disconnect();
      await standIn.close();
    }
  });

  it('keeps a failing head entry (500) until it is applied or, after repeated data errors, dead-lettered; the shard then moves on', async () => {
    const { sql } = services.database;
    const { userId, cardId } = await seedUser(sql, {});
    const stream = userKeys(services.prefix, userId).outbox;
    const url = 'https://writer.example/qstash';
    const app = createQStashReceiverApp({
      receiver: new Receiver({ currentSigningKey: CURRENT, nextSigningKey: NEXT }),
      sql,
      redis: services.redis,
      prefix: services.prefix,
      publicUrl: url,
      apply: APPLY,
    });
    const deliver = async (body: string) =>
      (
        await app.request('/qstash', {
          method: 'POST',
          body,
          headers: { 'upstash-signature': await qstashSignature(CURRENT, url, body) },
        })
      ).status;
    // Postgres rejects the head entry: a hold for a user it does not know (a foreign-key violation).
    const ghost = decisionFields({
      userId: '00000000-0000-4000-8000-000000000001',
      cardId,
      grantedCents: 100n,
    });
    const next = decisionFields({ userId, cardId, grantedCents: 0n, requestedCents: 50n });
    const fields = (flat: string[]) =>
      Object.fromEntries(flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1]!]] : [])));
    const mark = (await services.redis.xrevrange(stream, '+', '-', 'COUNT', 1))[0]?.[0] ?? null;
    const ghostId = await addEntry(services.redis, services.prefix, userId, ghost);
    const nextId = await addEntry(services.redis, services.prefix, userId, next);
    const ghostBody = JSON.stringify({ stream, id: ghostId, prev: mark, fields: fields(ghost) });
    const nextBody = JSON.stringify({ stream, id: nextId, prev: ghostId, fields: fields(next) });
    const deadBefore = await services.redis.xlen(deadLetterKey(services.prefix));
    // Not yet: retried by QStash, the shard waits behind it, nothing acknowledged.
    expect(await deliver(ghostBody)).toBe(500);
    expect(await deliver(nextBody)).toBe(409);
    expect(await deliver(ghostBody)).toBe(500);
    expect(await services.redis.xlen(deadLetterKey(services.prefix))).toBe(deadBefore);
    // The third failure: dead-lettered, and the shard moves on.
    expect(await deliver(ghostBody)).toBe(200);
    expect(await services.redis.xlen(deadLetterKey(services.prefix))).toBe(deadBefore + 1);
    // Its money is missing from Postgres: the user it names is kept from rebuilds (rebuild-guard.ts).
    expect(
      await services.redis.smembers(
        userDeadLettersKey(services.prefix, '00000000-0000-4000-8000-000000000001'),
      ),
    ).toEqual([deadLetterMember(stream, ghostId)]);
    expect(await deliver(nextBody)).toBe(200);
    const [row] = await sql<
      { n: number }[]
    >`select count(*)::int as n from decisions where user_id = ${userId}`;
    expect(row?.n).toBe(1);
  });
});
