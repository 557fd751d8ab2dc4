/**
 * What a chaos run records: every authorization request sent and what came back, every lifecycle event
 * Stripe (the harness) generated and each of its deliveries, every price move, every fault with its
 * time. Times are milliseconds since the run started (performance.now() based, monotonic). The checker
 * (checker.ts) reads only this and the facts gathered from Postgres and Redis after the system healed.
 */

export interface ChaosUser {
  userId: string;
  cardId: string;
  /** WETH base units (never changed in v1: no deposits or withdrawals). */
  collateralBase: string;
  creditLimitCents: string;
}

/** One authorization request (first or incremental) and its answer as the caller saw it. */
export interface RequestRecord {
  eventId: string;
  authorizationId: string;
  userId: string;
  incremental: boolean;
  amountCents: number;
  controllable: boolean;
  sentMs: number;
  /** When the answer came back; null when none did (timeout, reset, refused: Stripe declines). */
  answeredMs: number | null;
  answer: { approved: boolean; amountCents: number; reason: string; decisionId: string } | null;
  /** Which process it went to (for the minimal history). */
  target: string;
  error: string | null;
}

/** A re-sent authorization request (Stripe retrying): the first answer must come back. */
export interface ReplayRecord {
  eventId: string;
  sentMs: number;
  answeredMs: number | null;
  answer: { approved: boolean; amountCents: number; reason: string; decisionId: string } | null;
}

export type LifecycleKind =
  | 'created'
  | 'updated_pending'
  | 'updated_closed'
  | 'updated_reversed'
  | 'updated_expired'
  | 'capture'
  | 'refund';

export interface DeliveryRecord {
  sentMs: number;
  ackedMs: number | null;
  status: number;
  body: string;
}

/** A lifecycle event as Stripe generated it, and each delivery of it. */
export interface LifecycleRecord {
  eventId: string;
  kind: LifecycleKind;
  authorizationId: string;
  userId: string;
  /** Authorization events: Stripe's amount (what it approved in all) and whether it approved. */
  amountCents: number;
  approved: boolean;
  requestCount: number;
  /** When Stripe generated it (order of generation per authorization is Stripe's truth). */
  generatedMs: number;
  deliveries: DeliveryRecord[];
}

export interface PriceRecord {
  answerE8: string;
  sentMs: number;
  ackedMs: number | null;
}

export type FaultKind =
  | 'kill_hot_path'
  | 'kill_writer'
  | 'stop_process'
  | 'redis_kill_restart'
  | 'postgres_stop_restart'
  | 'redis_stall'
  | 'redis_one_way'
  | 'redis_cut'
  | 'redis_latency'
  | 'postgres_stall'
  | 'postgres_cut'
  | 'postgres_latency';

export interface FaultRecord {
  kind: FaultKind;
  /** Which process or proxy ('hot-path-0', 'writer-0', 'all', 'redis', 'postgres'). */
  target: string;
  /** For one-way partitions: which direction was held back. */
  detail: string;
  plannedAtMs: number;
  durationMs: number;
  startedMs: number | null;
  endedMs: number | null;
}

export interface ChaosHistory {
  seed: number;
  durationS: number;
  initialPriceE8: string;
  /** The hot path's FALLBACK_GRANT_CENTS_MAX in this run. */
  fallbackGrantCentsMax: number;
  users: ChaosUser[];
  requests: RequestRecord[];
  replays: ReplayRecord[];
  lifecycle: LifecycleRecord[];
  prices: PriceRecord[];
  faults: FaultRecord[];
}

/** What Postgres and Redis held after the system healed and drained. */
export interface FinalFacts {
  /** decisions rows by Stripe event id. */
  decisions: Record<string, { approved: boolean; approvedCents: string; source: string; count: number }>;
  /** card_events rows per Stripe event id (lifecycle events and requests). */
  cardEventCounts: Record<string, number>;
  /** ledger_transfers per ref ('hold:<eventId>', 'lifecycle:<eventId>'). */
  transferCounts: Record<string, number>;
  /** Per user: Postgres and Redis holds and unsettled. */
  balances: Record<
    string,
    { pgHolds: string; pgUnsettled: string; redisHolds: string; redisUnsettled: string }
  >;
  /** conservationProblems (Redis = Postgres, ledger explains balances, transfers balance, audit chain). */
  conservation: string[];
  /** Fallback decisions never adopted into Redis, outbox entries and dead letters left. */
  unadoptedFallbacks: number;
  outboxLeft: number;
  deadLetters: number;
  /** The dead letters themselves (first few, fields truncated), to tell why the writer refused them. */
  deadLetterSamples?: string[];
  /** Per authorization with a hold anywhere: Redis's hold and Postgres's held_cents. */
  authorizationHolds?: Record<string, { redis: string; pg: string }>;
}
