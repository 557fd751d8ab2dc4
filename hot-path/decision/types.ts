/**
 * The decision's settings and outcome, shared by the decision engine (engine.ts) and the Postgres
 * fallback (postgres-fallback.ts), which the engine calls: here so that neither imports the other's
 * types back.
 */
import type { Config } from '../../shared/config.ts';
import type { DecisionReason } from '../../shared/outbox/records.ts';

export interface DecisionOutcome {
  approved: boolean;
  /** Cents granted (0 when declined). */
  amountCents: bigint;
  reason: DecisionReason;
  decisionId: string;
  source: 'redis' | 'postgres' | 'none';
  /** True when this answer was stored earlier for the same event (a replay). */
  replay: boolean;
  /** True when the fallback declined because another process decides from Redis (redis-lease.ts). */
  fenced?: boolean;
  /** Replicas that acknowledged the decision (WAIT), when REDIS_WAIT_REPLICAS > 0 and Redis decided. */
  replicasAcked?: number;
  redisRoundTrips: number;
}

export type DecisionSettings = Pick<
  Config,
  | 'REDIS_KEY_PREFIX'
  | 'BLOCKED_MCCS'
  | 'CASH_WITHDRAWAL_POLICY'
  | 'VELOCITY_LIMIT_PER_MIN'
  | 'HOLD_TTL_S'
  | 'HOLD_TTL_LODGING_S'
  | 'DECISION_BUDGET_MS'
  | 'REDIS_DECISION_BUDGET_MS'
  | 'REDIS_DECIDER_LEASE_MS'
  | 'FALLBACK_GRANT_CENTS_MAX'
  | 'REDIS_WAIT_REPLICAS'
  | 'REDIS_WAIT_TIMEOUT_MS'
>;
