/**
 * Stripe's side of the `stripe` job read from Stripe's API with the `stripe` library: the Issuing
 * transactions and authorizations created in a period, from `GET /v1/issuing/transactions` and
 * `GET /v1/issuing/authorizations` with `created[gte]`/`created[lt]`, page by page (`limit`,
 * `starting_after` = the last id of the previous page, until `has_more` is false).
 *
 * It is an invariant that a period is either read whole or not at all: any bad answer (an HTTP error
 * after the library's retries, a body that is not a list, an object that does not parse, an object
 * outside the period asked for, `has_more` with an empty page, a cursor that does not move, more pages
 * or items than the limits allow) throws one `StripeApiError` naming the list, the page and the reason,
 * and nothing of the partial read is used. The caller records the run as failed and retries the period.
 */
import Stripe from 'stripe';
import { limits } from './limits.ts';
import {
  parseAuthorizationObject,
  parseTransactionObject,
  type StripeAuthorization,
  type StripeTransaction,
} from './stripe-export.ts';

export class StripeApiError extends Error {
  readonly code = 'stripe_api_bad_response';
}

export interface StripeApiClientOptions {
  apiKey: string;
  /** Stripe's API base, `https://api.stripe.com` (STRIPE_API_URL); tests use a local server. */
  apiUrl: string;
  apiVersion: string;
  timeoutMs?: number;
  maxNetworkRetries?: number;
}

/** A `stripe` client for the reconciliation: host, port and protocol from `apiUrl`, no telemetry. */
export function createStripeApiClient(options: StripeApiClientOptions): Stripe {
  const url = new URL(options.apiUrl);
  const protocol = url.protocol === 'http:' ? 'http' : 'https';
  return new Stripe(options.apiKey, {
    // The account's pinned version is what the rest of the program reads (STRIPE_API_VERSION); the
    // fields read here (id, type, amount, created, status, approved) are the same in every version.
    apiVersion: options.apiVersion as Stripe.LatestApiVersion,
    host: url.hostname,
    port: url.port === '' ? (protocol === 'http' ? 80 : 443) : Number(url.port),
    protocol,
    timeout: options.timeoutMs ?? limits.stripeApiTimeoutMs,
    maxNetworkRetries: options.maxNetworkRetries ?? limits.stripeApiRetries,
    telemetry: false,
  });
}

export interface IssuingPeriod {
  transactions: StripeTransaction[];
  authorizations: StripeAuthorization[];
  /** Requests made (both lists). */
  pages: number;
}

export interface FetchPeriodOptions {
  /** Period [fromS, toS) in Unix seconds on the objects' `created`. */
  fromS: number;
  toS: number;
  pageSize?: number;
  pagesMax?: number;
  itemsMax?: number;
}

/** Anything shaped like a Stripe key, in a message we did not write (an error from the server). */
const KEY_LIKE = /\b[sr]k_(?:live|test)_[A-Za-z0-9_*]+/g;

function describe(error: unknown): string {
  if (error instanceof Stripe.errors.StripeError) {
    const status = error.statusCode === undefined ? '' : ` (HTTP ${error.statusCode})`;
    return `${error.type}${status}: ${error.message}`.replace(KEY_LIKE, '[key]').slice(0, 300);
  }
  return (error instanceof Error ? error.message : String(error)).replace(KEY_LIKE, '[key]').slice(0, 300);
}

interface ListPage {
  object?: unknown;
  data?: unknown;
  has_more?: unknown;
}

async function listAll<T extends { id: string; createdS: number }>(
  name: 'transactions' | 'authorizations',
  list: (params: {
    created: { gte: number; lt: number };
    limit: number;
    starting_after?: string;
  }) => Promise<ListPage>,
  parse: (item: unknown, label: string) => T,
  options: FetchPeriodOptions,
): Promise<{ items: T[]; pages: number }> {
  const pageSize = options.pageSize ?? limits.stripeApiPageSize;
  const pagesMax = options.pagesMax ?? limits.stripeApiPagesMax;
  const itemsMax = options.itemsMax ?? limits.stripeApiItemsMax;
  const { fromS, toS } = options;
  const where = `GET /v1/issuing/${name}`;
  const items: T[] = [];
  let startingAfter: string | undefined;
  for (let page = 1; ; page++) {
    if (page > pagesMax) {
      throw new StripeApiError(
        `${where}: more than ${pagesMax} pages for one period (limit); nothing was used`,
      );
    }
    let body: ListPage;
    try {
      body = await list({
        created: { gte: fromS, lt: toS },
        limit: pageSize,
        ...(startingAfter === undefined ? {} : { starting_after: startingAfter }),
      });
    } catch (error) {
      throw new StripeApiError(`${where} page ${page}: ${describe(error)}`);
    }
    if (body.object !== 'list' || !Array.isArray(body.data) || typeof body.has_more !== 'boolean') {
      throw new StripeApiError(
        `${where} page ${page}: the answer is not a list object (object, data, has_more)`,
      );
    }
    if (body.data.length > pageSize) {
      throw new StripeApiError(
        `${where} page ${page}: ${body.data.length} items, more than the ${pageSize} asked for`,
      );
    }
    for (const [i, raw] of body.data.entries()) {
      const item = parse(raw, `${where} page ${page} item ${i}`);
      if (item.createdS < fromS || item.createdS >= toS) {
        throw new StripeApiError(
          `${where} page ${page}: ${item.id} was created at ${item.createdS}, outside the period [${fromS}, ${toS}) asked for`,
        );
      }
      items.push(item);
    }
    if (items.length > itemsMax) {
      throw new StripeApiError(
        `${where}: more than ${itemsMax} items for one period (limit); nothing was used`,
      );
    }
    if (!body.has_more) return { items, pages: page };
    const last = items[items.length - 1];
    if (body.data.length === 0 || last === undefined) {
      throw new StripeApiError(`${where} page ${page}: has_more is true but the page is empty`);
    }
    if (last.id === startingAfter) {
      throw new StripeApiError(
        `${where} page ${page}: the page ends where it started (${last.id}); the cursor does not move`,
      );
    }
    startingAfter = last.id;
  }
}

const wrapParse =
  <T>(parse: (item: unknown, label: string) => T) =>
  (item: unknown, label: string): T => {
    try {
      return parse(item, label);
    } catch (error) {
      throw new StripeApiError((error as Error).message);
    }
  };

/**
 * Reads the Issuing transactions and authorizations created in [fromS, toS) from Stripe's API.
 *
 * @example await fetchIssuingPeriod(createStripeApiClient({...}), { fromS: 1767225600, toS: 1767312000 })
 */
export async function fetchIssuingPeriod(
  stripe: Stripe,
  options: FetchPeriodOptions,
): Promise<IssuingPeriod> {
  if (!Number.isInteger(options.fromS) || !Number.isInteger(options.toS) || options.fromS >= options.toS) {
    throw new RangeError(`the period [${options.fromS}, ${options.toS}) is empty or not whole seconds`);
  }
  const transactions = await listAll(
    'transactions',
    (params) => stripe.issuing.transactions.list(params) as Promise<ListPage>,
    wrapParse(parseTransactionObject),
    options,
  );
  const authorizations = await listAll(
    'authorizations',
    (params) => stripe.issuing.authorizations.list(params) as Promise<ListPage>,
    wrapParse(parseAuthorizationObject),
    options,
  );
  return {
    transactions: transactions.items,
    authorizations: authorizations.items,
    pages: transactions.pages + authorizations.pages,
  };
}
