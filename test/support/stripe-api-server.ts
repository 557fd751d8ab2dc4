/**
 * A local HTTP server that speaks Stripe's list format for `GET /v1/issuing/transactions` and
 * `GET /v1/issuing/authorizations`, for the reconciliation tests (Stripe's servers are not reachable
 * here): bearer-key check (401 as Stripe answers it), `created[gte]` / `created[lt]` filters, newest
 * first, `limit` (1..100), `starting_after` (an id of the previous page), `has_more`, `url`. Objects
 * are Stripe's published examples (reconciler/fixtures/stripe-api-examples.json) with fields
 * changed per test. `fault` replaces the next answers of a list with a bad one, to test what a bad
 * response does; every request is recorded.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

const EXAMPLES = JSON.parse(
  readFileSync(path.join(import.meta.dirname, '../../reconciler/fixtures/stripe-api-examples.json'), 'utf8'),
) as { transaction: Record<string, unknown>; authorization: Record<string, unknown> };

/** Stripe's example Issuing Transaction with `fields` changed. */
export function exampleTransaction(fields: {
  id: string;
  type: 'capture' | 'refund';
  amount: number;
  created: number;
  authorization?: string | null;
  card?: string;
}): Record<string, unknown> {
  return { ...structuredClone(EXAMPLES.transaction), merchant_amount: fields.amount, ...fields };
}

/** Stripe's example Issuing Authorization with `fields` changed. */
export function exampleAuthorization(fields: {
  id: string;
  amount: number;
  approved: boolean;
  status: 'pending' | 'closed' | 'reversed' | 'expired';
  created: number;
  card?: string;
}): Record<string, unknown> {
  return { ...structuredClone(EXAMPLES.authorization), merchant_amount: fields.amount, ...fields };
}

export type ListName = 'transactions' | 'authorizations';

export interface Fault {
  list: ListName;
  /** Which page of the list answers badly (1 = the first request); later pages are served normally. */
  page?: number;
  /** Answers left to spoil (default 1; the stripe library retries 5xx). */
  times?: number;
  status?: number;
  body: string | ((page: { data: unknown[]; has_more: boolean }) => unknown);
}

export interface StripeApiServer {
  url: string;
  apiKey: string;
  objects: Record<ListName, Record<string, unknown>[]>;
  requests: { list: ListName; query: Record<string, string> }[];
  faults: Fault[];
  close(): Promise<void>;
}

export async function startStripeApiServer(apiKey: string): Promise<StripeApiServer> {
  const state: Omit<StripeApiServer, 'url' | 'close'> = {
    apiKey,
    objects: { transactions: [], authorizations: [] },
    requests: [],
    faults: [],
  };
  const pageOf = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${Date.now()}` });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    };
    const match = /^\/v1\/issuing\/(transactions|authorizations)$/.exec(url.pathname);
    if (req.method !== 'GET' || match === null) {
      send(404, {
        error: {
          type: 'invalid_request_error',
          message: `Unrecognized request URL (${req.method}: ${url.pathname})`,
        },
      });
      return;
    }
    if (req.headers.authorization !== `Bearer ${state.apiKey}`) {
      // Stripe masks all but the last 4 characters of a wrong key in this message.
      const given = String(req.headers.authorization ?? '').replace(/^Bearer /, '');
      send(401, {
        error: {
          type: 'invalid_request_error',
          message: `Invalid API Key provided: ${given.slice(0, 8)}****${given.slice(-4)}`,
        },
      });
      return;
    }
    const list = match[1] as ListName;
    const query = Object.fromEntries(url.searchParams);
    state.requests.push({ list, query });
    // Which page of the current walk this is: a request without starting_after starts a walk.
    const page = query['starting_after'] === undefined ? 1 : (pageOf.get(list) ?? 1) + 1;
    pageOf.set(list, page);
    const limit = Number(query['limit'] ?? '10');
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      send(400, {
        error: { type: 'invalid_request_error', message: 'Invalid integer: limit', param: 'limit' },
      });
      return;
    }
    const gte =
      query['created[gte]'] === undefined ? Number.NEGATIVE_INFINITY : Number(query['created[gte]']);
    const lt = query['created[lt]'] === undefined ? Number.POSITIVE_INFINITY : Number(query['created[lt]']);
    const all = state.objects[list]
      .filter((o) => (o['created'] as number) >= gte && (o['created'] as number) < lt)
      .sort(
        (a, b) =>
          (b['created'] as number) - (a['created'] as number) ||
          String(b['id']).localeCompare(String(a['id'])),
      );
    let start = 0;
    if (query['starting_after'] !== undefined) {
      const at = all.findIndex((o) => o['id'] === query['starting_after']);
      if (at < 0) {
        send(400, {
          error: {
            type: 'invalid_request_error',
            message: `No such object: '${query['starting_after']}'`,
            param: 'starting_after',
          },
        });
        return;
      }
      start = at + 1;
    }
    const data = all.slice(start, start + limit);
    const body = { object: 'list', url: `/v1/issuing/${list}`, has_more: start + limit < all.length, data };
    const fault = state.faults.find((f) => f.list === list && (f.page ?? 1) === page && (f.times ?? 1) > 0);
    if (fault !== undefined) {
      fault.times = (fault.times ?? 1) - 1;
      send(fault.status ?? 200, typeof fault.body === 'string' ? fault.body : fault.body(body));
      return;
    }
    send(200, body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(state, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}
