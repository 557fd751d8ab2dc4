/**
 * Every bound of the hot path in one place, checked at boot (STYLE.md: put a limit on everything
 * that can grow). The policy's and the lifecycle handlers' own are spelled in shared/ (the reconciler
 * runs the handlers too) and included here.
 */
import { lifecycleLimits } from '../shared/lifecycle/limits.ts';
import { policyLimits } from '../shared/policy/limits.ts';

export const limits = {
  ...policyLimits,
  ...lifecycleLimits,
  /** Retries of the check-and-reserve when the account changed between read and reserve. */
  reserveAttemptsMax: 3,
  /**
   * Account snapshots (collateral, limit, version) kept in memory per process, a few hundred bytes
   * each; when full they are all dropped and re-read one HGETALL at a time.
   */
  accountSnapshotsMax: 200_000,
  /**
   * Redis Cluster: MOVED/ASK/TRYAGAIN redirects one command follows inside the cluster client before it
   * fails (ioredis's `maxRedirections`, default 16). A slot moving under a script takes ASK then TRYAGAIN
   * (and a MOVED when ioredis resends to another node), so 4 is one TRYAGAIN wait or two per send.
   */
  clusterRedirectionsMax: 4,
  /**
   * Redis Cluster: the wait before a command that got TRYAGAIN (its slot is mid-migration and its keys
   * are split, or it would create one) is sent again, in the client and in the script runner.
   */
  clusterTryAgainDelayMs: 10,
  /**
   * Redis Cluster: resends of a decision script that came back redirected, each only while the Redis
   * attempt's budget (REDIS_DECISION_BUDGET_MS) leaves time for it; then the request falls back.
   */
  clusterScriptRetriesMax: 10,
  /** Time kept back from the budget for writing the response. */
  responseMarginMs: 15,
  /** Time the Postgres fallback needs at least; the Redis attempt's budget must leave it. */
  fallbackReserveMs: 50,
  /**
   * Postgres fallbacks one process runs at once (each holds a connection until it has settled); a
   * request beyond them is declined `system_unavailable` at once, without Postgres. Unbounded, a cold
   * process on a starved machine sent every request whose Redis attempt ran late (a cold account being
   * rebuilt from Postgres) to a fallback on that same Postgres, which then had nothing left for the
   * rebuilds (docs/hot-path.md "Fallback and failure", fallbacks in flight).
   */
  fallbacksInFlightMax: 4,
  /** Fallback decisions read from Postgres and adopted into Redis per statement during a catch-up. */
  adoptionBatchMax: 500,
  /**
   * Postgres connections a hot path opens before it reports ready (at most DATABASE_POOL_MAX): as many
   * as one cold decision uses at once (a card's first decision on a cold cache reads its account with 4
   * queries at once), so the first swipes do not wait for Postgres to start backends. Not the whole pool:
   * every process of a fleet (and every hot path of the test suite, on one shared server) would hold
   * that many idle connections for 30 s after it starts.
   */
  postgresConnectionsAtStart: 4,
  /** Fallback grants one process remembers for adoption without Postgres (beyond: Postgres only). */
  ownGrantsMax: 100_000,
  /**
   * HOT_PATH_WORKERS > 1 (hot-path/workers): the first wait before a crashed worker is started again;
   * each further crash of the same worker inside `workerCrashWindowMs` doubles it, up to the max.
   */
  workerRestartDelayMsMin: 200,
  workerRestartDelayMsMax: 5_000,
  /**
   * Crashes of all workers inside `workerCrashWindowMs` after which the primary gives up: it stops the
   * others and exits 1, so the orchestrator (Kubernetes, systemd) sees a failing process rather than
   * one that restarts workers forever.
   */
  workerCrashesMax: 10,
  workerCrashWindowMs: 60_000,
  /**
   * Times in a row one worker may die before it ever listened (Redis unreachable at start, the port
   * refused) before the primary gives up and exits 1: the next start would fail alike, and the
   * orchestrator's own backoff (a pod's CrashLoopBackOff) is the better judge of when to try again.
   */
  workerStartFailuresMax: 3,
  /** How long the primary waits for a worker to answer a /metrics, /healthz or /readyz request over IPC. */
  workerReplyTimeoutMs: 2_000,
} as const;

/**
 * The hot path's Postgres pool budget: every worker has a pool of its own (DATABASE_POOL_MAX), and each
 * pooled connection may hold one of the server connections PgBouncer gives the hot path's role
 * (`PGBOUNCER_ROLE_POOL_SIZE`: default_pool_size in deploy/pgbouncer/pgbouncer.ini) for the length of a
 * fallback transaction. Beyond it one process's workers would queue behind each other inside PgBouncer
 * (`query_wait_timeout` 10 s, far past a 2 s swipe). Returns the problem, or null when it fits.
 */
export function poolBudgetProblem(config: {
  HOT_PATH_WORKERS: number;
  DATABASE_POOL_MAX: number;
  PGBOUNCER_ROLE_POOL_SIZE: number;
}): string | null {
  const connections = config.HOT_PATH_WORKERS * config.DATABASE_POOL_MAX;
  if (connections <= config.PGBOUNCER_ROLE_POOL_SIZE) return null;
  return `HOT_PATH_WORKERS (${config.HOT_PATH_WORKERS}) × DATABASE_POOL_MAX (${config.DATABASE_POOL_MAX}) = ${connections} Postgres connections, more than PGBOUNCER_ROLE_POOL_SIZE (${config.PGBOUNCER_ROLE_POOL_SIZE}) server connections for the role; lower DATABASE_POOL_MAX or the workers, or raise default_pool_size in PgBouncer and PGBOUNCER_ROLE_POOL_SIZE with it`;
}

export function assertLimits(budgetMs: number, redisTimeoutMs: number, redisDecisionBudgetMs: number): void {
  const forFallback = budgetMs - limits.responseMarginMs - limits.fallbackReserveMs;
  if (redisDecisionBudgetMs > forFallback) {
    throw new Error(
      `REDIS_DECISION_BUDGET_MS (${redisDecisionBudgetMs}) must leave ${limits.fallbackReserveMs} ms for the Postgres fallback inside DECISION_BUDGET_MS (${budgetMs})`,
    );
  }
  if (redisTimeoutMs >= budgetMs - limits.responseMarginMs) {
    throw new Error(
      `REDIS_COMMAND_TIMEOUT_MS (${redisTimeoutMs}) must leave time for the Postgres fallback inside DECISION_BUDGET_MS (${budgetMs})`,
    );
  }
}
