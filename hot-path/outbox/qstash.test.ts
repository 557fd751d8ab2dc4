// Proves the QStash transport at its real boundary (QStash's servers are unreachable here): the relay's
// publish requests are checked byte for byte by a local HTTP endpoint standing where QStash's API is;
// the writer's receiver accepts signatures built exactly as QStash builds them (HS256 JWT, iss Upstash,
// sub = URL, body = base64url SHA-256) with the current or the next key, and refuses others; and a
// decision travels hot path → stream → relay → signed delivery → Postgres exactly once; a body over the
// receiver's limit is answered 413 without being read (a declared 64 MiB with 1 KiB sent is answered at
// once over a real socket), and nothing is recorded.
import { request as httpRequest } from 'node:http';
import { serve } from '@hono/node-server';
import { Client, Receiver } from '@upstash/qstash';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createQStashReceiverApp } from '../../ledger-writer/qstash-receiver.ts';
import { outboxBacklog } from '../../ledger-writer/testing.ts';
import { outboxLimits } from '../../shared/outbox/limits.ts';
import { readWatermark } from '../../shared/outbox/watermark.ts';
import { HOLD_EXPIRY_DEFAULTS } from '../../shared/policy/hold-expiry.ts';
import { allOutboxKeys, deadLetterKey } from '../../shared/redis/keys.ts';
import { setUpServices, type TestServices } from '../../test/support/db.ts';
import { seedAsset, seedUser, WETH, wethForBorrowPower } from '../../test/support/fixtures.ts';
import { post, startHotPath } from '../../test/support/hot-path.ts';
import { freePort } from '../../test/support/processes.ts';
import { qstashSignature, qstashStandIn } from '../../test/support/qstash.ts';
import { authorizationRequest } from '../../test/support/stripe.ts';
import { limits } from './limits.ts';
import { createQStashRelay } from './qstash-relay.ts';

const CURRENT = 'sig_current_signing_key_for_tests_01';
const NEXT = 'sig_next_signing_key_for_tests_0002';
const TOKEN = 'qstash_test_token_0001';
let services: TestServices;

beforeAll(async () => {
  services = await setUpServices();
  await seedAsset(
    services.database.sql,
    services.redis,
    services.prefix,
    WETH,
    300_000_000_000n,
    Math.floor(Date.now() / 1000),
  );
});
afterAll(async () => {
  await services?.close();
});

describe('QStash transport', () => {
  it('refuses deliveries not signed by the current or next key, or whose body or URL differ', async () => {
    const url = 'https://writer.example/qstash';
    const app = createQStashReceiverApp({
      receiver: new Receiver({ currentSigningKey: CURRENT, nextSigningKey: NEXT }),
      sql: services.sqlFor('credana_ledger_writer'),
      redis: services.redis,
      prefix: services.prefix,
      publicUrl: url,
      apply: { holdExpiry: HOLD_EXPIRY_DEFAULTS },
    });
    const body = JSON.stringify({ stream: 'x', id: '1-0', fields: {} });
    const send = async (signature: string | null, payload = body) =>
      (
        await app.request('/qstash', {
          method: 'POST',
          body: payload,
          headers: signature === null ? {} : { 'upstash-signature': signature },
        })
      ).status;
    expect(await send(null)).toBe(401);
    expect(await send(await qstashSignature('sig_someone_else_entirely_000', url, body))).toBe(401);
    expect(await send(await qstashSignature(CURRENT, url, body), `${body} `)).toBe(401);
    expect(await send(await qstashSignature(CURRENT, 'https://elsewhere.example/qstash', body))).toBe(401);
    expect(await send(await qstashSignature(CURRENT, url, body, -10))).toBe(401);
    // Correctly signed (by either key) but not a valid record: 400, nothing applied.
    expect(await send(await qstashSignature(CURRENT, url, body))).toBe(400);
    expect(await send(await qstashSignature(NEXT, url, body))).toBe(400);
  });

  it('carries a decision hot path → stream → relay → signed delivery → Postgres exactly once', async () => {
    const receiverPort = await freePort();
    const publicUrl = `http://127.0.0.1:${receiverPort}/qstash`;
    const receiverApp = createQStashReceiverApp({
      receiver: new Receiver({ currentSigningKey: CURRENT, nextSigningKey: NEXT }),
      sql: services.sqlFor('credana_ledger_writer'),
      redis: services.redis,
      prefix: services.prefix,
      publicUrl,
      apply: { holdExpiry: HOLD_EXPIRY_DEFAULTS },
    });
    const receiver = serve({ fetch: receiverApp.fetch, port: receiverPort, hostname: '127.0.0.1' });
    const statuses: number[] = [];
    // Delivers like QStash: signed with the current key; every message twice (at-least-once).
    const standIn = await qstashStandIn(async (destination, body) => {
      for (let i = 0; i < 2; i++) {
        const res = await fetch(destination, {
          method: 'POST',
          body,
          headers: {
            'content-type': 'application/json',
            'upstash-signature': await qstashSignature(CURRENT, destination, body),
          },
        });
        statuses.push(res.status);
      }
    });
    const hotPath = await startHotPath(services);
    const relay = createQStashRelay({
      redis: services.redis,
      client: new Client({ token: TOKEN, baseUrl: standIn.baseUrl }),
      prefix: services.prefix,
      destinationUrl: publicUrl,
      consumer: 'test-relay',
      batchMax: 100,
      blockMs: 10,
    });
    try {
      const { userId, cardId } = await seedUser(services.database.sql, {
        collateral: [{ assetId: 'WETH', amountBase: wethForBorrowPower(10_000n, 300_000_000_000n) }],
      });
      const event = authorizationRequest({ cardId, amountCents: 2_500 });
      expect((await post(hotPath, '/stripe/authorizations', event)).json.approved).toBe(true);
      await relay.start();
      // Acknowledged (deleted) once the receiver's watermark passed it, not when published.
      for (let i = 0; i < 100 && (await outboxBacklog(services.redis, services.prefix)) > 0; i++)
        await new Promise((r) => setTimeout(r, 50));
      await relay.stop();
      expect(relay.published).toBe(1);
      // The exact request the client sent to QStash's API.
      const [request] = standIn.published;
      expect(request?.method).toBe('POST');
      expect(request?.path).toBe(`/v2/publish/${publicUrl}`);
      expect(request?.headers['authorization']).toBe(`Bearer ${TOKEN}`);
      expect(request?.headers['content-type']).toBe('application/json');
      expect(String(request?.headers['upstash-deduplication-id'])).toMatch(/^.+-\d+-\d+$/);
      expect(request?.headers['upstash-retry-delay']).toBe(limits.retryDelayExpression);
      const body = JSON.parse(request?.body ?? '{}') as {
        stream: string;
        id: string;
        prev: string | null;
        fields: Record<string, string>;
      };
      expect(body.prev).toBe(null);
      expect(body.fields['ok']).toBe('1');
      expect(body.fields['amt']).toBe('2500');
      expect(JSON.parse(body.fields['r'] ?? '{}')).toMatchObject({
        kind: 'decision',
        eventId: event.id,
        userId,
      });
      expect(statuses).toEqual([200, 200]);
      // Applied once in Postgres; the stream no longer holds the entry.
      const [account] = await services.database.sql<
        { holds_cents: string }[]
      >`select holds_cents from credit_accounts where user_id = ${userId}`;
      expect(account?.holds_cents).toBe('2500');
      const [count] = await services.database.sql<
        { n: number }[]
      >`select count(*)::int as n from decisions where event_id = ${event.id}`;
      expect(count?.n).toBe(1);
      expect(await outboxBacklog(services.redis, services.prefix)).toBe(0);
    } finally {
      await relay.stop();
      await hotPath.close();
      receiver.close();
      await standIn.close();
    }
  });

  it('answers 413 body_too_large to a body over the limit, without reading it, and records nothing', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/qstash`;
    const app = createQStashReceiverApp({
      receiver: new Receiver({ currentSigningKey: CURRENT, nextSigningKey: NEXT }),
      sql: services.sqlFor('credana_ledger_writer'),
      redis: services.redis,
      prefix: services.prefix,
      publicUrl: url,
      apply: { holdExpiry: HOLD_EXPIRY_DEFAULTS },
    });
    const stream = allOutboxKeys(services.prefix)[3]!;
    // The test before may have relayed through this shard (its user's shard is random): compare, not null.
    const watermarkBefore = await readWatermark(services.redis, stream);
    const [before] = await services.database.sql<{ n: number }[]>`select count(*)::int as n from card_events`;
    // Correctly signed and shaped like a relayed entry, one field large enough to cross the limit.
    const body = JSON.stringify({
      stream,
      id: '1-0',
      prev: null,
      fields: { r: 'x'.repeat(outboxLimits.qstashBodyBytesMax) },
    });
    const res = await app.request('/qstash', {
      method: 'POST',
      body,
      headers: { 'upstash-signature': await qstashSignature(CURRENT, url, body) },
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ error: 'body_too_large' });

    // Over a real socket: 64 MiB declared, 1 KiB sent. The answer comes at once, not after 64 MiB.
    const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no answer: the body is being read')), 3_000);
        const req = httpRequest(url, {
          method: 'POST',
          headers: { 'content-length': String(64 * 1024 * 1024), 'upstash-signature': 'unused' },
        });
        req.on('response', (response) => {
          clearTimeout(timer);
          response.resume();
          resolve(response.statusCode ?? 0);
          req.destroy();
        });
        req.on('error', () => undefined); // the server closes the connection after answering
        req.write('x'.repeat(1_024));
      });
      expect(status).toBe(413);
    } finally {
      server.close();
    }
    // Nothing recorded: no event, no dead letter, the shard's watermark untouched.
    const [after] = await services.database.sql<{ n: number }[]>`select count(*)::int as n from card_events`;
    expect(after?.n).toBe(before?.n);
    expect(await services.redis.xlen(deadLetterKey(services.prefix))).toBe(0);
    expect(await readWatermark(services.redis, stream)).toBe(watermarkBefore);
  });
});
