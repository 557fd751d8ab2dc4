// Proves the QStash receiver runs a job only for a request signed the way QStash signs (an HS256 JWT from issuer "Upstash" over the URL and the body's SHA-256, checked by @upstash/qstash's Receiver), refuses forged, unsigned, mismatched and oversized (413, nothing run) requests, records the run, and serves the metrics — in-process with app.request() on a real Postgres.
import { createHash } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setUpServices, type TestServices } from '../test/support/db.ts';
import { testConfig } from '../test/support/hot-path.ts';
import { createReceiver, createReconcileApp } from './http.ts';
import { createReconcileServices, type ReconcileServices } from './index.ts';
import { limits } from './limits.ts';

const CURRENT = 'sig_current_key_for_tests_000001';
const NEXT = 'sig_next_key_for_tests_0000000002';
const URL_BASE = 'https://jobs.credana.example';
let services: TestServices;
let reconcile: ReconcileServices;
let app: ReturnType<typeof createReconcileApp>;

beforeAll(async () => {
  services = await setUpServices();
  reconcile = createReconcileServices(testConfig(services, {}, 'credana_reconciliation'));
  app = createReconcileApp({
    services: reconcile,
    receiver: createReceiver(CURRENT, NEXT),
    publicUrl: (path) => `${URL_BASE}${path}`,
  });
});

afterAll(async () => {
  await reconcile?.close();
  await services?.close();
});

async function sign(key: string, url: string, body: string): Promise<string> {
  const bodyHash = createHash('sha256').update(body).digest('base64url');
  const nowS = Math.floor(Date.now() / 1000);
  return new SignJWT({ body: bodyHash })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer('Upstash')
    .setSubject(url)
    .setIssuedAt(nowS)
    .setNotBefore(nowS)
    .setExpirationTime(nowS + 300)
    .setJti(`jwt_${nowS}`)
    .sign(new TextEncoder().encode(key));
}

const call = (path: string, body: string, signature?: string) =>
  app.request(path, {
    method: 'POST',
    body,
    headers: {
      'content-type': 'application/json',
      ...(signature === undefined ? {} : { 'upstash-signature': signature }),
    },
  });

describe('QStash receiver', () => {
  it('runs a job for a request signed with either key, and records it', async () => {
    const body = JSON.stringify({ job: 'books' });
    for (const key of [CURRENT, NEXT]) {
      const res = await call('/reconcile/books', body, await sign(key, `${URL_BASE}/reconcile/books`, body));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ job: 'books', status: 'ok' });
    }
    const [row] = await services.database.sql<{ n: number }[]>`
      select count(*)::int as n from reconciliation_runs where job = 'books' and status = 'ok'`;
    expect(row?.n).toBe(2);
    const metrics = await (await app.request('/metrics')).text();
    expect(metrics).toContain('credana_reconciliation_runs_total{job="books",status="ok"} 2');
  });

  it('refuses unsigned, forged, re-aimed and tampered requests', async () => {
    const body = JSON.stringify({ job: 'books' });
    const url = `${URL_BASE}/reconcile/books`;
    expect((await call('/reconcile/books', body)).status).toBe(401);
    expect(
      (await call('/reconcile/books', body, await sign('not_the_key_at_all_000000000000', url, body))).status,
    ).toBe(401);
    // Signed for another job's URL, or over another body.
    expect(
      (await call('/reconcile/books', body, await sign(CURRENT, `${URL_BASE}/reconcile/cache`, body))).status,
    ).toBe(401);
    expect(
      (await call('/reconcile/books', JSON.stringify({ job: 'cache' }), await sign(CURRENT, url, body)))
        .status,
    ).toBe(401);
    // Correctly signed but naming another job than the path.
    const other = JSON.stringify({ job: 'cache' });
    expect((await call('/reconcile/books', other, await sign(CURRENT, url, other))).status).toBe(400);
  });

  it('answers 413 body_too_large to a signed body over limits.httpBodyBytesMax and runs nothing', async () => {
    const [before] = await services.database.sql<{ n: number }[]>`
      select count(*)::int as n from reconciliation_runs`;
    const body = JSON.stringify({ job: 'books', pad: 'x'.repeat(limits.httpBodyBytesMax) });
    const res = await call(
      '/reconcile/books',
      body,
      await sign(CURRENT, `${URL_BASE}/reconcile/books`, body),
    );
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ error: 'body_too_large' });
    const [after] = await services.database.sql<{ n: number }[]>`
      select count(*)::int as n from reconciliation_runs`;
    expect(after?.n).toBe(before?.n);
  });
});
