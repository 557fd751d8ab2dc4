/**
 * Reads a webhook's raw body (Stripe signs the exact bytes) with a size limit, in one pass, and its
 * headers.
 *
 * On @hono/node-server the body is read straight from Node's IncomingMessage: going through
 * `c.req.raw` builds a WHATWG Request, a ReadableStream over the socket and header objects for every
 * request, which cost more CPU than the whole decision (seen in a CPU profile of `npm run bench`).
 * Anywhere else (Hono's `app.request` in tests, other runtimes) the standard Request body is read, with
 * the same limit and the same answers.
 */
import type { IncomingMessage } from 'node:http';

export type RawBodyResult = { ok: true; text: string } | { ok: false; problem: 'too_large' };

/** The Node request behind a Hono context on @hono/node-server, if there is one. */
function nodeIncoming(env: unknown): IncomingMessage | null {
  const incoming = (env as { incoming?: unknown } | undefined)?.incoming;
  if (incoming === null || typeof incoming !== 'object') return null;
  return typeof (incoming as IncomingMessage).on === 'function' ? (incoming as IncomingMessage) : null;
}

/** Content-Length as a number, or null when absent or not a plain decimal. */
function declaredLength(value: string | string[] | null | undefined): number | null {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value)) return null;
  return Number(value);
}

function readIncoming(incoming: IncomingMessage, maxBytes: number): Promise<RawBodyResult> {
  const declared = declaredLength(incoming.headers['content-length']);
  if (declared !== null && declared > maxBytes) {
    // Not read: the connection is closed after the answer rather than draining a large body.
    incoming.resume();
    return Promise.resolve({ ok: false, problem: 'too_large' });
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (result: RawBodyResult) => {
      if (done) return;
      done = true;
      incoming.off('data', onData);
      incoming.off('end', onEnd);
      incoming.off('error', onError);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        chunks.length = 0;
        incoming.resume();
        finish({ ok: false, problem: 'too_large' });
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () =>
      finish({
        ok: true,
        text: (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)).toString('utf8'),
      });
    const onError = (error: Error) => {
      if (done) return;
      done = true;
      reject(error);
    };
    incoming.on('data', onData);
    incoming.on('end', onEnd);
    incoming.on('error', onError);
  });
}

async function readRequest(request: Request, maxBytes: number): Promise<RawBodyResult> {
  const declared = declaredLength(request.headers.get('content-length'));
  if (declared !== null && declared > maxBytes) return { ok: false, problem: 'too_large' };
  if (request.body === null) return { ok: true, text: '' };
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > maxBytes) {
      await reader.cancel();
      return { ok: false, problem: 'too_large' };
    }
    chunks.push(value);
  }
  return { ok: true, text: Buffer.concat(chunks, size).toString('utf8') };
}

/**
 * A request header (lower-case name). On Node it is read from the IncomingMessage's own header object:
 * `c.req.header()` would build a WHATWG Headers (and Request) for it.
 */
export function requestHeader(
  c: { env: unknown; req: { header(name: string): string | undefined } },
  name: string,
): string | undefined {
  const incoming = nodeIncoming(c.env);
  if (incoming === null) return c.req.header(name);
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The body as UTF-8 text, or `too_large` once more than `maxBytes` were declared or received. */
export function readRawBody(
  c: { env: unknown; req: { raw: Request } },
  maxBytes: number,
): Promise<RawBodyResult> {
  const incoming = nodeIncoming(c.env);
  return incoming !== null ? readIncoming(incoming, maxBytes) : readRequest(c.req.raw, maxBytes);
}
