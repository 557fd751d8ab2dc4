/**
 * The authorization decision: card → user → position lookup and check-and-reserve in one atomic
 * Redis step per user, one round trip in the steady state:
 *   - the exact bigint borrow power is computed here in TypeScript from in-memory prices and the
 *     user's collateral and limit as last read (HGETALL of the account, once per process and version);
 *   - EVALSHA of the DECIDE script re-checks the version, applies every rule, reserves the hold and
 *     appends the decision record to the outbox stream, all atomically. A changed version means the
 *     snapshot is stale: the account is read again and the script retried.
 * The Redis attempt has a budget of its own (REDIS_DECISION_BUDGET_MS, well inside the decision
 * budget), so a Redis that hangs rather than refuses hands over to the Postgres fallback in time. After a
 * failed attempt the process decides from Postgres, fenced against the processes still deciding from
 * Redis, until it has caught up (redis-lease.ts). If the fallback fails too the answer is a decline with
 * `system_unavailable`. A hold is never granted without being stored.
 * With REDIS_WAIT_REPLICAS, an approval is answered only once that many replicas acknowledged it (a WAIT
 * after the reply, shared by the approvals of the moment: replica-wait.ts); otherwise it is withdrawn
 * (RELEASE_UNREPLICATED) and the answer is a decline `replication_unconfirmed`.
 *
 * The pieces: the account snapshots (account-snapshots.ts), the Redis decision (redis-decision.ts), the
 * withdrawal of an unreplicated approval (unreplicated.ts) and the hand-off to the fallback
 * (fallback-handoff.ts); here the attempt inside its budget and the order of the two.
 */

import { randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { globallyBlockedMccs } from '../../shared/controls/cash-policy.ts';
import type { Sql } from '../../shared/db/client.ts';
import { withDeadline } from '../../shared/deadline.ts';
import { classifyRedisCallError, type ErrorCode } from '../../shared/errors.ts';
import { type CardOwners, createCardOwners } from '../../shared/lifecycle/card-owners.ts';
import type { Redis } from '../../shared/redis/client.ts';
import type { Market } from '../../shared/redis/market.ts';
import { type ClusterRedirect, clusterRedirectOf, type RedirectPolicy } from '../../shared/redis/script.ts';
import type { AuthorizationRequestEvent } from '../../shared/stripe/events.ts';
import { limits } from '../limits.ts';
import { createAccountSnapshots } from './account-snapshots.ts';
import {
  createFallbackFence,
  createFallbackSlots,
  decideByFallback,
  declined,
  isOutage,
  OwnFallbackPending,
} from './fallback-handoff.ts';
import { decideInRedis, type RedisDecisionDeps } from './redis-decision.ts';
import { createRedisLease, type RedisLease } from './redis-lease.ts';
import { createReplicaWaiter } from './replica-wait.ts';
import type { DecisionOutcome, DecisionSettings } from './types.ts';

export interface DecisionEngineDeps {
  settings: DecisionSettings;
  redis: Redis;
  sql: Sql;
  market: Market;
  /** Shared with the lifecycle handlers; one is made if not given. */
  cardOwners?: CardOwners;
  /** The fence between this process's Redis decisions and every process's fallback; made if not given. */
  lease?: RedisLease;
  /** Told why a Redis attempt failed and the decision fell back (an outage's code), for logs and metrics. */
  onRedisFailure?: (cause: ErrorCode, error: unknown) => void;
  /** Told why the Postgres fallback failed and the answer became `system_unavailable`. */
  onFallbackFailure?: (cause: ErrorCode, error: unknown) => void;
  /** Told of each resend of a decision script a Redis Cluster redirected (a slot being moved). */
  onRedisRedirect?: (redirect: ClusterRedirect) => void;
  /** The wall clock (decision ids, velocity windows, the UTC day, hold expiry); Date.now by default. */
  now?: () => number;
  /** The monotonic clock a decision's budget is measured on; performance.now by default. */
  monotonicNow?: () => number;
  /** Postgres fallbacks in flight at once; limits.ts `fallbacksInFlightMax` by default. */
  fallbacksInFlightMax?: number;
}

// Random bytes are drawn 4 KiB at a time: one call per decision cost ~14 µs (a CPU profile of the bench).
const randomPool = Buffer.alloc(4_096);
let randomAt = randomPool.length;

export function newDecisionId(nowMs: number): string {
  if (randomAt + 8 > randomPool.length) {
    randomFillSync(randomPool);
    randomAt = 0;
  }
  randomAt += 8;
  return `dec_${nowMs.toString(36)}${randomPool.toString('hex', randomAt - 8, randomAt)}`;
}

export interface DecisionEngine {
  /**
   * `startedAtMs` is the wall clock when the request arrived, `startedMonotonicMs` the monotonic clock
   * then (`performance.now()`; taken on entry when not given).
   */
  decide(
    event: AuthorizationRequestEvent,
    rawBody: string,
    startedAtMs: number,
    startedMonotonicMs?: number,
  ): Promise<DecisionOutcome>;
  /** Who may decide from where (shared with the server, which starts and stops it). */
  readonly lease: RedisLease;
}

export function createDecisionEngine(deps: DecisionEngineDeps): DecisionEngine {
  const { settings, redis, sql, market } = deps;
  const now = deps.now ?? Date.now;
  const monotonicNow = deps.monotonicNow ?? (() => performance.now());
  const prefix = settings.REDIS_KEY_PREFIX;
  const cardOwners = deps.cardOwners ?? createCardOwners({ redis, sql, prefix });
  const blocked = globallyBlockedMccs(settings);
  const lease =
    deps.lease ?? createRedisLease({ sql, redis, prefix, leaseMs: settings.REDIS_DECIDER_LEASE_MS });
  const onRedisFailure = deps.onRedisFailure ?? (() => {});
  const onRedisRedirect = deps.onRedisRedirect;
  /** A decision script's redirects are retried only while the Redis attempt has time for them. */
  const redirectPolicyOn =
    (clock: () => number) =>
    (redisDeadlineMs: number): RedirectPolicy => ({
      retriesMax: limits.clusterScriptRetriesMax,
      tryAgainDelayMs: limits.clusterTryAgainDelayMs,
      deadlineMs: redisDeadlineMs,
      now: clock,
      ...(onRedisRedirect === undefined ? {} : { onRetry: onRedisRedirect }),
    });
  const redirectPolicy = redirectPolicyOn(now);
  const onFallbackFailure = deps.onFallbackFailure ?? (() => {});
  const waitReplicas = settings.REDIS_WAIT_REPLICAS;
  const waiter =
    waitReplicas > 0 ? createReplicaWaiter(redis, waitReplicas, settings.REDIS_WAIT_TIMEOUT_MS) : null;
  // Users (and cards) with a fallback of this process in flight, counted; see decideInRedis.
  const fence = createFallbackFence();
  const snapshots = createAccountSnapshots({ redis, sql, prefix, now });
  const redisDecision: RedisDecisionDeps = {
    settings,
    redis,
    market,
    now,
    cardOwners,
    lease,
    snapshots,
    fence,
    blocked,
    waiter,
    redirectPolicy,
  };
  const slots = createFallbackSlots(deps.fallbacksInFlightMax ?? limits.fallbacksInFlightMax);
  const handoff = { settings, sql, market, now, cardOwners, lease, fence, slots, onFallbackFailure };

  return {
    lease,
    async decide(event, rawBody, startedAtMs, startedMonotonicMs = monotonicNow()) {
      // One clock per request: the wall time at its start plus the monotonic time since. A wall clock
      // that NTP steps while the request runs (back or forward) then neither stretches the budget past
      // the answer — a fallback still running after it would commit a decision Stripe was not told —
      // nor cuts it short, and the request's timestamps stay those of its start (docs/chaos.md bug 13).
      // Whole milliseconds, as Date.now gives (records carry them as integers).
      const requestNow = () => startedAtMs + Math.floor(monotonicNow() - startedMonotonicMs);
      const redisDeps: RedisDecisionDeps = {
        ...redisDecision,
        now: requestNow,
        redirectPolicy: redirectPolicyOn(requestNow),
      };
      const decisionId = newDecisionId(startedAtMs);
      const deadline = startedAtMs + settings.DECISION_BUDGET_MS - limits.responseMarginMs;
      const amount = event.data.object.pending_request.amount;
      if (event.data.object.pending_request.currency !== 'usd' || amount > limits.amountCentsMax) {
        return declined(decisionId, 'invalid_request', 0);
      }
      const fromRedis = await attemptRedis(
        redisDeps,
        onRedisFailure,
        event,
        rawBody,
        startedAtMs,
        decisionId,
        deadline,
      );
      if (fromRedis !== undefined) return fromRedis;
      // Redis is down, slow or not yet caught up: decide from Postgres in the time left.
      const remainingMs = deadline - requestNow();
      if (remainingMs < 5) return declined(decisionId, 'system_unavailable', 0);
      return decideByFallback(
        { ...handoff, now: requestNow },
        event,
        rawBody,
        decisionId,
        startedAtMs,
        deadline,
        remainingMs,
      );
    },
  };
}

/**
 * The Redis attempt, inside its own budget. Undefined when it failed: the caller falls back. A late
 * reply is not waited for; what the attempt may still do in Redis is superseded when the fallback's
 * decision is adopted (ADOPT_FALLBACK), and Postgres never books it (the fallback holds its ledger ref).
 */
async function attemptRedis(
  deps: RedisDecisionDeps,
  onRedisFailure: (cause: ErrorCode, error: unknown) => void,
  event: AuthorizationRequestEvent,
  rawBody: string,
  startedAtMs: number,
  decisionId: string,
  deadlineMs: number,
): Promise<DecisionOutcome | undefined> {
  const { settings, lease, now } = deps;
  const redisDeadlineMs = Math.min(deadlineMs, startedAtMs + settings.REDIS_DECISION_BUDGET_MS);
  if (lease.suspect()) return undefined;
  try {
    if (!lease.mayDecide()) {
      // The lease lapsed (first decision, a long pause): renew it and adopt what the fallback
      // granted meanwhile before deciding from Redis. Bounded by the same budget; a catch-up that is
      // not done in time is no Redis failure (it goes on, and finds out which side is away).
      const caughtUp = await withDeadline(lease.catchUp(), redisDeadlineMs - now()).catch(() => false);
      if (!caughtUp || !lease.mayDecide()) return undefined;
    }
    const outcome = await withDeadline(
      decideInRedis(deps, event, rawBody, startedAtMs, decisionId, redisDeadlineMs),
      redisDeadlineMs - now(),
    );
    lease.noteRedisOk();
    return outcome;
  } catch (error) {
    if (error instanceof OwnFallbackPending) return undefined;
    // Only an outage falls back. A bug — a TypeError, a script error, a key of the wrong type — is
    // not hidden behind Postgres decisions (nor made every user's problem by a suspect process): it
    // goes up to the route, which logs it and answers 500 (docs/hot-path.md, "Failure behaviour").
    const cause = classifyRedisCallError(error);
    if (!isOutage(cause)) throw error;
    // ioredis's "Too many Cluster redirections" is a bare Error: clusterRedirectOf reads it.
    const code: ErrorCode = clusterRedirectOf(error) !== null ? 'redis_redirect' : cause.code;
    onRedisFailure(code, error);
    // A connection that fails is Redis away: decide from Postgres until caught up. A reply that was
    // late is not (it is what an overloaded process sees too): only this request falls back, and
    // this user's next Redis decision waits for it (the fallback fence, then adoptOwn). A Redis that
    // hangs for everyone is found by the lease's PING, which then makes the process suspect.
    // A cluster redirect is not Redis away either: the slot is moving, Redis answers (decisions for
    // users on other slots go on from Redis).
    if (code !== 'deadline' && code !== 'redis_redirect') lease.markSuspect();
    return undefined;
  }
}
