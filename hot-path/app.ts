/**
 * The hot path's HTTP surface (Hono). Routes:
 * - POST /stripe/authorizations — the real-time authorization webhook (`issuing_authorization.request`).
 *   Answers 200 with `{ approved, amount?, metadata }` and the `Stripe-Version` header, unless the
 *   signature is bad (400), the body too large (413), or a bug threw (a logged bare 500: Stripe applies
 *   its default; outages never do, they fall back or decline — docs/hot-path.md).
 * - POST /stripe/events — every other Issuing event (created / updated / transaction.created).
 * - GET /healthz, GET /readyz (ready while Redis answers and the process is not suspect; Postgres is
 *   reported, not required: ops/readiness.ts).
 * - GET /metrics answers 404 here unless `Authorization: Bearer <METRICS_TOKEN>` is presented: this port
 *   is public; Prometheus scrapes the internal listener (ops/internal-app.ts, HOT_PATH_METRICS_PORT).
 */
import { performance } from 'node:perf_hooks';
import type { Config } from '../shared/config.ts';
import { NonRetryableError, RetryableError } from '../shared/errors.ts';
import { createApp as createHttpApp, HttpError } from '../shared/http/app.ts';
import { readRawBody, requestHeader } from '../shared/http/raw-body.ts';
import type { Lifecycle, LifecycleResult, ReviewReason } from '../shared/lifecycle/handler.ts';
import type { Logger } from '../shared/observability/logger.ts';
import { metricsTokenPresented } from '../shared/observability/metrics-access.ts';
import type { Readiness } from '../shared/observability/readiness.ts';
import { errorText } from '../shared/outbox/dead-letters.ts';
import {
  type AuthorizationRequestEvent,
  anyEvent,
  authorizationRequestEvent,
  LIFECYCLE_TYPES,
  type LifecycleEvent,
  lifecycleEvent,
} from '../shared/stripe/events.ts';
import type { DecisionEngine } from './decision/engine.ts';
import type { DecisionOutcome } from './decision/types.ts';
import type { Metrics } from './ops/metrics.ts';
import { verifyStripeSignature } from './stripe/signature.ts';

export type HotPathSettings = Pick<
  Config,
  | 'STRIPE_WEBHOOK_SECRETS'
  | 'STRIPE_API_VERSION'
  | 'STRIPE_SIGNATURE_TOLERANCE_S'
  | 'WEBHOOK_BODY_LIMIT_BYTES'
  | 'DECISION_BUDGET_MS'
> &
  Partial<Pick<Config, 'METRICS_TOKEN'>>;

export interface AppDeps {
  settings: HotPathSettings;
  engine: DecisionEngine;
  lifecycle: Lifecycle;
  metrics: Metrics;
  logger: Logger;
  readiness: Readiness;
}

export function createApp(deps: AppDeps) {
  const { settings, engine, lifecycle, metrics, logger } = deps;
  // A bug (never an outage: the engine answers those) is logged with the request id and answered a
  // bare 500; on /stripe/authorizations Stripe then applies its own default to the authorization
  // (docs/hot-path.md, "Failure behaviour").
  const app = createHttpApp({ logger, onUnhandled: () => metrics.unhandledErrors.inc() });

  app.post('/stripe/authorizations', async (c) => {
    const startedAtMs = Date.now();
    // The budget is measured on the monotonic clock, which NTP never steps (engine.ts `decide`).
    const startedMonotonicMs = performance.now();
    const startedAt = process.hrtime.bigint();
    const raw = await verifiedBody(deps, c);
    c.header('Stripe-Version', settings.STRIPE_API_VERSION);
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      // JSON.parse of a string throws only SyntaxError: the body is not JSON, declined below.
      json = undefined;
    }
    const parsed = authorizationRequestEvent.safeParse(json);
    if (!parsed.success) {
      metrics.decisions.inc({ outcome: 'declined', reason: 'invalid_request', source: 'none' });
      logger.warn({ requestId: c.get('requestId') }, 'malformed authorization request declined');
      return c.json({ approved: false, metadata: { reason: 'invalid_request' } });
    }
    const event = parsed.data;
    const outcome = await engine.decide(event, raw, startedAtMs, startedMonotonicMs).catch(escapedDecision);
    const elapsedS = Number(process.hrtime.bigint() - startedAt) / 1e9;
    reportDecision(deps, c.get('requestId'), event, outcome, elapsedS);
    const partial =
      outcome.approved &&
      outcome.reason === 'partial' &&
      event.data.object.pending_request.is_amount_controllable;
    return c.json({
      approved: outcome.approved,
      ...(partial ? { amount: Number(outcome.amountCents) } : {}),
      metadata: { decision_id: outcome.decisionId, reason: outcome.reason },
    });
  });

  app.post('/stripe/events', async (c) => {
    const raw = await verifiedBody(deps, c);
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      // JSON.parse of a string throws only SyntaxError: the body is not JSON.
      throw new HttpError('malformed_json');
    }
    const head = anyEvent.safeParse(json);
    if (!head.success) throw new HttpError('malformed_event');
    if (!LIFECYCLE_TYPES.has(head.data.type)) {
      metrics.lifecycleEvents.inc({ type: 'other', result: 'ignored' });
      logger.info(
        { requestId: c.get('requestId'), eventId: head.data.id, type: head.data.type },
        'event type not processed',
      );
      return c.json({ received: true, processed: false });
    }
    const parsed = lifecycleEvent.safeParse(json);
    if (!parsed.success) {
      metrics.lifecycleEvents.inc({ type: head.data.type, result: 'malformed' });
      throw new HttpError('malformed_event');
    }
    const result = await applyOrRefuse(lifecycle, deps, c.get('requestId'), parsed.data, raw);
    if (result.rejected !== null) {
      // Recorded (card_events, through the outbox) but not booked: answering 2xx stops Stripe's retries,
      // which would bring the same event back with the same currency for days and lose nothing more.
      reportNotBooked(deps, c.get('requestId'), parsed.data, result.rejected);
      return c.json({
        received: true,
        processed: false,
        duplicate: !result.applied,
        reason: result.rejected,
      });
    }
    if (result.reviewCents > 0n && result.reviewReason !== null)
      reportHeldForReview(deps, c.get('requestId'), parsed.data, result, result.reviewReason);
    metrics.lifecycleEvents.inc({ type: parsed.data.type, result: result.applied ? 'applied' : 'duplicate' });
    return c.json({ received: true, processed: true, duplicate: !result.applied });
  });

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/readyz', async (c) => {
    const status = await deps.readiness();
    return c.json(status, status.ready ? 200 : 503);
  });
  app.get('/metrics', async (c) => {
    // Public port: the same 404 as any unknown path, unless the metrics token is presented.
    if (!metricsTokenPresented(requestHeader(c, 'authorization'), settings.METRICS_TOKEN))
      throw new HttpError('not_found');
    c.header('Content-Type', metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });
  return app;
}

/**
 * What escapes the engine is a bug, whatever its class: the engine answers every outage itself (falls
 * back to Postgres or declines). Rethrown as one so the app's onError logs it at error level and counts
 * it — a bare `Error` would otherwise pass there for ioredis's connection error, a warning (that is how
 * the fallback's lost race with the ledger writer hid as "dependency unavailable", docs/hot-path.md).
 */
function escapedDecision(error: unknown): never {
  const bug = new NonRetryableError('unknown', `the decision failed: ${errorText(error)}`, { cause: error });
  if (error instanceof Error && error.stack !== undefined) bug.stack = error.stack;
  throw bug;
}

/**
 * Reads the raw body once (bounded by WEBHOOK_BODY_LIMIT_BYTES) and verifies it; throws
 * HttpError('body_too_large') above the limit and a 400 HttpError on a bad signature.
 */
async function verifiedBody(
  deps: Pick<AppDeps, 'settings' | 'metrics'>,
  c: {
    env: unknown;
    req: { raw: Request; header(name: string): string | undefined };
  },
) {
  const { settings, metrics } = deps;
  const body = await readRawBody(c, settings.WEBHOOK_BODY_LIMIT_BYTES);
  if (!body.ok) {
    metrics.webhookRejected.inc({ problem: 'too_large' });
    throw new HttpError('body_too_large');
  }
  const raw = body.text;
  const check = verifyStripeSignature(
    raw,
    requestHeader(c, 'stripe-signature'),
    settings.STRIPE_WEBHOOK_SECRETS,
    settings.STRIPE_SIGNATURE_TOLERANCE_S,
  );
  if (!check.ok) {
    metrics.webhookRejected.inc({ problem: check.problem });
    throw new HttpError(`stripe_${check.problem}`);
  }
  return raw;
}

/** Counts, times and logs one authorization decision. */
function reportDecision(
  deps: Pick<AppDeps, 'settings' | 'metrics' | 'logger'>,
  requestId: string,
  event: AuthorizationRequestEvent,
  outcome: DecisionOutcome,
  elapsedS: number,
): void {
  const { settings, metrics, logger } = deps;
  metrics.decisionLatency.observe({ source: outcome.source }, elapsedS);
  metrics.redisRoundTrips.inc(outcome.redisRoundTrips);
  metrics.decisions.inc({
    outcome: outcome.approved ? 'approved' : 'declined',
    reason: outcome.reason,
    source: outcome.source,
  });
  if (outcome.source !== 'redis')
    metrics.fallbacks.inc({
      result: outcome.source === 'none' ? 'declined' : outcome.fenced ? 'fenced' : 'postgres',
    });
  if (elapsedS * 1000 > settings.DECISION_BUDGET_MS) metrics.budgetExceeded.inc();
  logger.info(
    {
      requestId,
      decisionId: outcome.decisionId,
      eventId: event.id,
      authorizationId: event.data.object.id,
      approved: outcome.approved,
      reason: outcome.reason,
      source: outcome.source,
      replay: outcome.replay,
      latencyMs: Math.round(elapsedS * 1e5) / 100,
    },
    'authorization decided',
  );
}

/**
 * Applies a lifecycle event. One whose card the cache places with a user who does not hold it, even
 * after asking Postgres (RetryableError 'card_owner_mismatch', shared/lifecycle/handler.ts), booked
 * nothing: it is counted, alerted on and answered 503 (HttpError), which Stripe retries.
 */
async function applyOrRefuse(
  lifecycle: Lifecycle,
  deps: Pick<AppDeps, 'metrics' | 'logger'>,
  requestId: string,
  event: LifecycleEvent,
  raw: string,
): Promise<LifecycleResult> {
  try {
    return await lifecycle.apply(event, raw);
  } catch (error) {
    if (!(error instanceof RetryableError && error.code === 'card_owner_mismatch')) throw error;
    deps.metrics.lifecycleEvents.inc({ type: event.type, result: 'card_owner_mismatch' });
    deps.logger.error(
      { requestId, eventId: event.id, type: event.type, alert: 'card_owner_mismatch' },
      'lifecycle event refused: its card is not among its owner’s cached cards',
    );
    throw new HttpError('lifecycle_card_owner_mismatch');
  }
}

/** Counts and alerts on a lifecycle event recorded but not booked (its currency is not the program's). */
function reportNotBooked(
  deps: Pick<AppDeps, 'metrics' | 'logger'>,
  requestId: string,
  event: LifecycleEvent,
  rejected: NonNullable<LifecycleResult['rejected']>,
): void {
  deps.metrics.lifecycleEvents.inc({ type: event.type, result: rejected });
  deps.logger.error(
    {
      requestId,
      eventId: event.id,
      type: event.type,
      alert: rejected,
    },
    'lifecycle event recorded but not booked: unsupported currency',
  );
}

/** Counts and alerts on a refund (or capture reversal) held for review instead of credited. */
function reportHeldForReview(
  deps: Pick<AppDeps, 'metrics' | 'logger'>,
  requestId: string,
  event: LifecycleEvent,
  result: LifecycleResult,
  reason: ReviewReason,
): void {
  const { metrics, logger } = deps;
  metrics.refundsHeldForReview.inc({ reason });
  metrics.refundCentsHeldForReview.inc({ reason }, Number(result.reviewCents));
  logger.error(
    {
      requestId,
      eventId: event.id,
      userId: result.userId,
      reviewCents: result.reviewCents.toString(),
      reason,
      alert: 'refund_held_for_review',
    },
    'refund not credited: held for review',
  );
}
