// Proves createSchedules sends QStash's documented wire request for each schedule (POST /v2/schedules/<destination> with bearer token, Upstash-Cron, Upstash-Schedule-Id, retries, timeout and the JSON body) by pointing @upstash/qstash's real Client at a local HTTP server that records and checks every request; QStash's own servers are not reachable here.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSchedules, SCHEDULES } from './qstash-schedules.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

let server: Server;
let baseUrl: string;
const seen: Seen[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ scheduleId: String(req.headers['upstash-schedule-id']) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe('QStash schedules', () => {
  it('creates one schedule per job with the exact request', async () => {
    const ids = await createSchedules({
      qstashUrl: baseUrl,
      token: 'qstash_test_token',
      destinationBaseUrl: 'https://jobs.credana.example/',
    });
    expect(ids).toEqual(SCHEDULES.map((s) => `credana-reconcile-${s.job}`));
    expect(seen).toHaveLength(SCHEDULES.length);
    const cache = seen[0]!;
    expect(cache.method).toBe('POST');
    expect(cache.url).toBe('/v2/schedules/https://jobs.credana.example/reconcile/cache');
    expect(cache.headers['authorization']).toBe('Bearer qstash_test_token');
    expect(cache.headers['upstash-cron']).toBe('*/5 * * * *');
    expect(cache.headers['upstash-schedule-id']).toBe('credana-reconcile-cache');
    expect(cache.headers['upstash-method']).toBe('POST');
    expect(cache.headers['upstash-retries']).toBe('3');
    expect(cache.headers['upstash-timeout']).toBe('240s');
    expect(cache.headers['content-type']).toBe('application/json');
    expect(JSON.parse(cache.body)).toEqual({ job: 'cache' });
    expect(Object.keys(cache.headers).filter((h) => h.startsWith('upstash-telemetry'))).toEqual([]);
    expect(seen.map((s) => s.headers['upstash-cron'])).toEqual(SCHEDULES.map((s) => s.cron));
  });
});
