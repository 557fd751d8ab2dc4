/**
 * The raw body reader on a real @hono/node-server (Node's IncomingMessage) and through Hono's
 * `app.request` (a WHATWG Request): exact bytes, the limit with and without Content-Length, and a
 * multi-byte character split across chunks.
 */
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRawBody } from './raw-body.ts';

const LIMIT = 1_000;
const app = new Hono();
app.post('/echo', async (c) => {
  const body = await readRawBody(c, LIMIT);
  return body.ok ? c.json({ text: body.text }) : c.json({ problem: body.problem }, 413);
});

let server: ReturnType<typeof serve>;
let port = 0;
beforeAll(async () => {
  await new Promise<void>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => {
      port = info.port;
      resolve();
    });
  });
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** Sends `chunks` one write at a time; chunked transfer encoding unless `contentLength` is given. */
function send(chunks: Buffer[], contentLength?: number): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/echo',
        headers: contentLength === undefined ? {} : { 'content-length': contentLength },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => {
          text += d.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

describe('readRawBody on Node', () => {
  it('returns the exact text, a multi-byte character split across two chunks included', async () => {
    const euro = Buffer.from('€', 'utf8'); // 3 bytes
    const chunks = [
      Buffer.from('{"a":"'),
      euro.subarray(0, 1),
      Buffer.concat([euro.subarray(1), Buffer.from('"}')]),
    ];
    const res = await send(chunks);
    expect(res).toEqual({ status: 200, body: { text: '{"a":"€"}' } });
  });

  it('refuses a declared length above the limit without reading it', async () => {
    const res = await send([Buffer.alloc(LIMIT + 1, 'x')], LIMIT + 1);
    expect(res).toEqual({ status: 413, body: { problem: 'too_large' } });
  });

  it('refuses a chunked body once it passes the limit', async () => {
    const res = await send([Buffer.alloc(600, 'x'), Buffer.alloc(600, 'y')]);
    expect(res).toEqual({ status: 413, body: { problem: 'too_large' } });
  });

  it('accepts a body of exactly the limit', async () => {
    const res = await send([Buffer.alloc(LIMIT, 'z')], LIMIT);
    expect(res).toEqual({ status: 200, body: { text: 'z'.repeat(LIMIT) } });
  });
});

describe('readRawBody on a standard Request', () => {
  it('gives the same answers', async () => {
    const ok = await app.request('/echo', { method: 'POST', body: '{"a":"€"}' });
    expect(await ok.json()).toEqual({ text: '{"a":"€"}' });
    const big = await app.request('/echo', { method: 'POST', body: 'x'.repeat(LIMIT + 1) });
    expect(big.status).toBe(413);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(600));
        controller.enqueue(new Uint8Array(600));
        controller.close();
      },
    });
    const chunked = await app.request('/echo', {
      method: 'POST',
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
  });
});
