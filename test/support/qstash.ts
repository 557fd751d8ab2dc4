/**
 * For the QStash transport's tests: signatures built exactly as QStash builds them, and a local HTTP
 * server standing where QStash's publish API is (QStash's servers are unreachable here).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { SignJWT } from 'jose';
import { freePort } from './processes.ts';

/** Signs a delivery the way QStash does (HS256 JWT: iss Upstash, sub the URL, body's base64url SHA-256). */
export async function qstashSignature(
  key: string,
  url: string,
  body: string,
  lifetimeS = 300,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ body: createHash('sha256').update(body).digest('base64url') })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer('Upstash')
    .setSubject(url)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + lifetimeS)
    .setJti(`jwt_${randomUUID()}`)
    .sign(new TextEncoder().encode(key));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (chunk: Buffer) => {
      data += chunk.toString();
    });
    req.on('end', () => resolve(data));
  });
}

export interface Published {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}

export type Deliver = (destination: string, body: string) => Promise<void>;

/**
 * Listens where QStash's API would, records each publish, and hands it to `deliver` (when set) before
 * answering 201 as QStash does; a message over `messageBytesMax` is refused with 413, as QStash refuses
 * one over its plan's limit. `deliver` may be swapped while running (e.g. the writer comes back).
 */
export async function qstashStandIn(initial: Deliver | null, messageBytesMax = Number.POSITIVE_INFINITY) {
  const published: Published[] = [];
  let deliver = initial;
  const port = await freePort();
  const server: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req);
    if (Buffer.byteLength(body) > messageBytesMax) {
      // As QStash answers a message over the plan's size limit.
      res.writeHead(413, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'message too large' }));
      return;
    }
    published.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
    const destination = decodeURIComponent((req.url ?? '').replace(/^\/v2\/publish\//, ''));
    if (deliver !== null) await deliver(destination, body);
    res.writeHead(201, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ messageId: `msg_${published.length}` }));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    published,
    baseUrl: `http://127.0.0.1:${port}`,
    setDeliver(next: Deliver | null) {
      deliver = next;
    },
    close: () => new Promise((r) => server.close(r)),
  };
}
