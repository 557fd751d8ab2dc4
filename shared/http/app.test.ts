// Proves the one HTTP app every surface starts from (createApp): a request id on every answer, known
// errors answered from the one table, an outage (a real Redis that is not there) logged as a warning
// with its code, and an unexpected error logged with its request id and answered with a bare 500 that
// says nothing of it — in-process with app.request() and a real pino logger.
import { Writable } from 'node:stream';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { freePort } from '../../test/support/processes.ts';
import { createLogger } from '../observability/logger.ts';
import { createRedis } from '../redis/client.ts';
import { createApp, HTTP_ERRORS, HttpError } from './app.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean))
        lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { stream, lines };
}

function appWithRoutes() {
  const { stream, lines } = capture();
  const unhandled: Error[] = [];
  const app = createApp({
    logger: createLogger('info', 'test', stream),
    onUnhandled: (error) => unhandled.push(error),
  });
  app.get('/refused', () => {
    throw new HttpError('stripe_bad_signature');
  });
  app.get('/too-large', () => {
    throw new HttpError('body_too_large');
  });
  app.get('/bug', () => {
    // A programmer error whose message must not reach the caller.
    throw new TypeError('cannot read properties of undefined (reading "secret_internal_detail")');
  });
  // A sub-app mounted with route(): its errors reach the same onError.
  const sub = new Hono();
  sub.get('/bug', () => {
    throw new RangeError('sub-app detail');
  });
  app.route('/sub', sub);
  return { app, lines, unhandled };
}

describe('createApp', () => {
  it('answers a known error with its status and code from the table', async () => {
    const { app, lines } = appWithRoutes();
    const refused = await app.request('/refused');
    expect(refused.status).toBe(HTTP_ERRORS.stripe_bad_signature.status);
    expect(await refused.json()).toEqual({ error: 'bad_signature' });
    expect(refused.headers.get('x-request-id')).toMatch(/^[0-9a-z]+-[0-9a-z]+-[0-9a-z]+$/);
    const large = await app.request('/too-large');
    expect(large.status).toBe(413);
    expect(large.headers.get('connection')).toBe('close');
    const missing = await app.request('/nowhere');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: 'not_found' });
    // Refusals on purpose are not logged as errors.
    expect(lines).toEqual([]);
  });

  it('logs an unexpected error with the request id and answers a bare 500', async () => {
    const { app, lines, unhandled } = appWithRoutes();
    for (const path of ['/bug', '/sub/bug']) {
      const res = await app.request(path);
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(JSON.parse(text)).toEqual({ error: 'internal' });
      expect(text).not.toContain('detail');
      const requestId = res.headers.get('x-request-id');
      expect(requestId).not.toBeNull();
      const line = lines.find((l) => l['requestId'] === requestId);
      expect(line).toMatchObject({ level: 50, msg: 'unhandled error', path });
      expect(JSON.stringify(line)).toContain('detail');
    }
    expect(unhandled.map((e) => e.name)).toEqual(['TypeError', 'RangeError']);
  });

  it('answers an outage with the same bare 500 but logs it as a warning with its code, not as a bug', async () => {
    const { app, lines, unhandled } = appWithRoutes();
    const redis = createRedis({ url: `redis://127.0.0.1:${await freePort()}`, offlineQueue: false });
    app.get('/redis', async (c) => c.json({ pong: await redis.ping() }));
    try {
      const res = await app.request('/redis');
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ error: 'internal' });
      const line = lines.find((l) => l['requestId'] === res.headers.get('x-request-id'));
      expect(line).toMatchObject({ level: 40, msg: 'dependency unavailable', code: 'redis_connection' });
      expect(unhandled).toEqual([]);
    } finally {
      redis.disconnect();
    }
  });
});
