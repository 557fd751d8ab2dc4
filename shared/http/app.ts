/**
 * Every Credana HTTP surface starts from `createApp`: a request id on every request (echoed as
 * `X-Request-Id`), one `onError` and one `notFound` (Hono's best practice, STYLE.md "Limits and
 * errors"). Routes are added to the app it returns, or mounted with `app.route()`.
 *
 * Errors: a route that refuses a request on purpose throws `HttpError(key)`, whose status and code
 * come from HTTP_ERRORS, the one table of known errors; the answer is `{ "error": <code> }` with that
 * status (a 413 also closes the connection: the body was refused unread). An outage (Postgres or
 * Redis away, by its class in shared/errors.ts) is logged as a warning with its code and answered
 * with the same bare 500 as a bug, which the caller retries (Stripe does, for days). Anything else is
 * a bug: it is logged as an error with the request id and answered with a bare
 * `{ "error": "internal" }` 500 that says nothing of what failed.
 */
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { classifyRedisCallError, type ErrorCode } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';

/**
 * The known errors of every HTTP surface: a key (what the route throws) → the status and the stable
 * code the caller sees. The same code may answer with different statuses on different surfaces (a bad
 * Stripe signature is 400, as Stripe expects; a bad QStash signature 401), so the key names both.
 */
export const HTTP_ERRORS = {
  not_found: { status: 404, code: 'not_found' },
  body_too_large: { status: 413, code: 'body_too_large' },
  malformed_json: { status: 400, code: 'malformed_json' },
  malformed_event: { status: 400, code: 'malformed_event' },
  stripe_missing_header: { status: 400, code: 'missing_header' },
  stripe_bad_signature: { status: 400, code: 'bad_signature' },
  stripe_expired: { status: 400, code: 'expired' },
  // A lifecycle event whose card the cache places with a user who does not hold it (hot-path/app.ts):
  // refused, nothing booked; Stripe retries it.
  lifecycle_card_owner_mismatch: { status: 503, code: 'card_owner_mismatch' },
} as const satisfies Record<string, { status: 400 | 401 | 404 | 409 | 413 | 503; code: string }>;

export type HttpErrorKey = keyof typeof HTTP_ERRORS;

/** A request refused on purpose: answered with HTTP_ERRORS[key]'s status and code. */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly status: (typeof HTTP_ERRORS)[HttpErrorKey]['status'];
  readonly code: string;
  constructor(readonly key: HttpErrorKey) {
    const known = HTTP_ERRORS[key];
    super(known.code);
    this.status = known.status;
    this.code = known.code;
  }
}

export interface AppEnv {
  Variables: { requestId: string };
}

export interface CreateAppDeps {
  logger: Pick<Logger, 'error' | 'warn'>;
  /** Told of every bug answered 500 (after it is logged), e.g. to count it. */
  onUnhandled?: (error: Error) => void;
  /** Told of every outage answered 500, with its code. */
  onUnavailable?: (code: ErrorCode) => void;
}

/**
 * @example
 *   const app = createApp({ logger });
 *   app.post('/things', async (c) => { if (bad) throw new HttpError('malformed_json'); … });
 */
export function createApp(deps: CreateAppDeps): Hono<AppEnv> {
  const { logger } = deps;
  const app = new Hono<AppEnv>();
  // Request ids for the logs: a process-unique counter (no random UUID per request), echoed as X-Request-Id.
  const requestIdPrefix = `${process.pid.toString(36)}-${Date.now().toString(36)}-`;
  let requestCount = 0;
  app.use(async (c, next) => {
    const id = requestIdPrefix + (++requestCount).toString(36);
    c.set('requestId', id);
    c.header('X-Request-Id', id);
    await next();
  });

  app.onError((error, c) => {
    if (error instanceof HttpError) {
      // A body refused unread: close the connection rather than reading the rest of it.
      if (error.status === 413) c.header('Connection', 'close');
      return c.json({ error: error.code }, error.status);
    }
    // Hono's own refusals (its middleware's) carry their answer.
    if (error instanceof HTTPException) return error.getResponse();
    const request = { requestId: c.get('requestId'), method: c.req.method, path: c.req.path };
    // Routes reach Postgres and Redis: a bare ioredis connection error counts as Redis away here
    // (classifyRedisCallError), so an outage does not page as a bug.
    const cause = classifyRedisCallError(error);
    if (cause.fault === 'environment' || cause.fault === 'deployment') {
      logger.warn(
        { ...request, code: cause.code, err: { name: error.name, message: error.message } },
        'dependency unavailable',
      );
      deps.onUnavailable?.(cause.code);
      return c.json({ error: 'internal' }, 500);
    }
    logger.error(
      { ...request, err: { name: error.name, message: error.message, stack: error.stack } },
      'unhandled error',
    );
    deps.onUnhandled?.(error);
    return c.json({ error: 'internal' }, 500);
  });
  app.notFound((c) => c.json({ error: HTTP_ERRORS.not_found.code }, HTTP_ERRORS.not_found.status));
  return app;
}
