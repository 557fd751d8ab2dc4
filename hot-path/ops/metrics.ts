/**
 * Prometheus metrics of the hot path, on a registry of its own (no global state): the process's
 * (shared/observability/metrics.ts, with default process metrics) or a bare one in tests.
 */
import { Counter, Histogram, Registry } from 'prom-client';

export function createMetrics(registry: Registry = new Registry()) {
  return {
    registry,
    decisionLatency: new Histogram({
      name: 'credana_decision_latency_seconds',
      help: 'Time from receiving an authorization request to answering it',
      labelNames: ['source'] as const,
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 1],
      registers: [registry],
    }),
    decisions: new Counter({
      name: 'credana_decisions_total',
      help: 'Authorization decisions by outcome and reason',
      labelNames: ['outcome', 'reason', 'source'] as const,
      registers: [registry],
    }),
    fallbacks: new Counter({
      name: 'credana_decision_fallbacks_total',
      help: 'Decisions that could not be made from Redis (decided from Postgres or declined)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    redisFailures: new Counter({
      name: 'credana_decision_redis_failures_total',
      help: 'Redis attempts of decisions that failed and fell back to Postgres, by cause (an error code of shared/errors.ts: deadline, redis_redirect = a Redis Cluster slot mid-migration, redis_connection, redis_busy, …)',
      labelNames: ['cause'] as const,
      registers: [registry],
    }),
    redisRedirects: new Counter({
      name: 'credana_decision_redis_redirects_total',
      help: 'Decision scripts sent again after a Redis Cluster redirect reached the script runner (moved, ask, tryagain: a slot being moved)',
      labelNames: ['redirect'] as const,
      registers: [registry],
    }),
    fallbackFailures: new Counter({
      name: 'credana_decision_fallback_failures_total',
      help: 'Postgres fallbacks of decisions that failed and declined system_unavailable, by cause (an error code of shared/errors.ts: deadline, pg_connection, …)',
      labelNames: ['cause'] as const,
      registers: [registry],
    }),
    unhandledErrors: new Counter({
      name: 'credana_http_unhandled_errors_total',
      help: 'Requests answered 500 because of an error nobody expected (a bug): each is logged with its request id',
      registers: [registry],
    }),
    leaseEvents: new Counter({
      name: 'credana_redis_lease_events_total',
      help: 'Redis decider lease catch-ups by outcome (caught_up, catch_up_failed_*, postgres_unreachable)',
      labelNames: ['event'] as const,
      registers: [registry],
    }),
    fallbackAdoptions: new Counter({
      name: 'credana_fallback_decisions_adopted_total',
      help: 'Postgres fallback decisions mirrored into the Redis cache',
      registers: [registry],
    }),
    budgetExceeded: new Counter({
      name: 'credana_decision_budget_exceeded_total',
      help: 'Decisions answered after the configured budget',
      registers: [registry],
    }),
    redisRoundTrips: new Counter({
      name: 'credana_decision_redis_round_trips_total',
      help: 'Redis round trips made by decisions (divide by decisions for the mean per decision)',
      registers: [registry],
    }),
    webhookRejected: new Counter({
      name: 'credana_webhook_rejected_total',
      help: 'Webhook requests refused before processing',
      labelNames: ['problem'] as const,
      registers: [registry],
    }),
    lifecycleEvents: new Counter({
      name: 'credana_lifecycle_events_total',
      help: 'Asynchronous Issuing events by type and result',
      labelNames: ['type', 'result'] as const,
      registers: [registry],
    }),
    refundsHeldForReview: new Counter({
      name: 'credana_refunds_held_for_review_total',
      help: 'Refunds (or capture reversals) not credited, in whole or part, booked to user_refunds_held, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    refundCentsHeldForReview: new Counter({
      name: 'credana_refund_cents_held_for_review_total',
      help: 'Cents of refunds held for review instead of credited, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
