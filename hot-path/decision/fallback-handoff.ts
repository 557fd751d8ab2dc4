/**
 * The hand-off from a failed Redis attempt to the Postgres fallback (postgres-fallback.ts), for the
 * decision engine (engine.ts): the fence that keeps this process's Redis decisions off a user (or card)
 * while its own fallback for them is in flight, the fallback inside the time left, and its grant
 * remembered (redis-lease.ts) before the fence is lifted.
 */
import type { Sql } from '../../shared/db/client.ts';
import { withDeadline } from '../../shared/deadline.ts';
import { type Classified, classifyError, type ErrorCode, RetryableError } from '../../shared/errors.ts';
import type { CardOwners } from '../../shared/lifecycle/card-owners.ts';
import type { DecisionReason } from '../../shared/outbox/records.ts';
import type { Market } from '../../shared/redis/market.ts';
import type { AuthorizationRequestEvent } from '../../shared/stripe/events.ts';
import { decideFromPostgres, type FallbackResult } from './postgres-fallback.ts';
import type { RedisLease } from './redis-lease.ts';
import type { DecisionOutcome, DecisionSettings } from './types.ts';

/** Users (and cards) with a fallback of this process in flight, counted; see decideInRedis. */
export interface FallbackFence {
  enter(key: string): void;
  leave(key: string): void;
  /** True while a fallback of this process for this user or card is in flight. */
  has(key: string): boolean;
}

export function createFallbackFence(): FallbackFence {
  const fallbacksInFlight = new Map<string, number>();
  return {
    enter: (key) => {
      fallbacksInFlight.set(key, (fallbacksInFlight.get(key) ?? 0) + 1);
    },
    leave: (key) => {
      const n = (fallbacksInFlight.get(key) ?? 1) - 1;
      if (n <= 0) fallbacksInFlight.delete(key);
      else fallbacksInFlight.set(key, n);
    },
    has: (key) => fallbacksInFlight.has(key),
  };
}

/** The Postgres fallbacks of this process in flight, at most `max` (limits.ts `fallbacksInFlightMax`). */
export interface FallbackSlots {
  /** Takes a slot; false when all are taken. */
  take(): boolean;
  release(): void;
}

export function createFallbackSlots(max: number): FallbackSlots {
  let inFlight = 0;
  return {
    take: () => {
      if (inFlight >= max) return false;
      inFlight++;
      return true;
    },
    release: () => {
      inFlight--;
    },
  };
}

/** This process's own fallback for the user is in flight: decide this request from Postgres too. */
export class OwnFallbackPending extends Error {
  readonly code = 'own_fallback_pending';
}

/** A dependency away or refusing us (shared/errors.ts faults `environment` and `deployment`), not a bug. */
export function isOutage(cause: Classified): boolean {
  return cause.fault === 'environment' || cause.fault === 'deployment';
}

export function declined(
  decisionId: string,
  reason: DecisionReason,
  redisRoundTrips: number,
): DecisionOutcome {
  return {
    approved: false,
    amountCents: 0n,
    reason,
    decisionId,
    source: 'none',
    replay: false,
    redisRoundTrips,
  };
}

export interface FallbackHandoffDeps {
  settings: DecisionSettings;
  sql: Sql;
  market: Market;
  now: () => number;
  cardOwners: CardOwners;
  lease: RedisLease;
  fence: FallbackFence;
  slots: FallbackSlots;
  onFallbackFailure: (cause: ErrorCode, error: unknown) => void;
}

/**
 * Decides from Postgres in the `remainingMs` left, fenced: until this fallback has committed or given
 * up, and its grant is remembered, no Redis decision of this process is made for its card or user.
 */
export async function decideByFallback(
  deps: FallbackHandoffDeps,
  event: AuthorizationRequestEvent,
  rawBody: string,
  decisionId: string,
  startedAtMs: number,
  deadline: number,
  remainingMs: number,
): Promise<DecisionOutcome> {
  const { settings, sql, market, now, cardOwners, lease, onFallbackFailure } = deps;
  // A slot is held until the fallback has settled, past its answer too (its connection is busy till then).
  if (!deps.slots.take()) {
    onFallbackFailure(
      'fallback_saturated',
      new RetryableError('fallback_saturated', 'fallbacks in flight at their limit'),
    );
    return declined(decisionId, 'system_unavailable', 0);
  }
  // Until this fallback has committed or given up, and its grant is remembered, no Redis decision
  // of this process is made for its card or user (the user is known here once the card was seen).
  const cardId = event.data.object.card.id;
  const knownUser = cardOwners.known(cardId);
  const fenceKeys = knownUser === undefined ? [cardId] : [cardId, knownUser];
  for (const key of fenceKeys) deps.fence.enter(key);
  let fallback: Promise<FallbackResult> | undefined;
  try {
    fallback = decideFromPostgres(
      { sql, market, settings, now, holder: lease.holder },
      event,
      rawBody,
      decisionId,
      startedAtMs,
      deadline,
    );
    const outcome = await withDeadline(fallback, remainingMs);
    return { ...outcome.decision, fenced: outcome.fenced, redisRoundTrips: 0 };
  } catch (error) {
    // Postgres failed or ran out of time too; a transaction that had not committed by its deadline
    // refuses to commit (postgres-fallback.ts), so nothing of it outlives this answer. A bug is
    // not an outage: it goes up to the route (a logged 500), as in attemptRedis.
    const cause = classifyError(error);
    if (!isOutage(cause)) throw error;
    onFallbackFailure(cause.code, error);
    return declined(decisionId, 'system_unavailable', 0);
  } finally {
    // The grant is remembered (to be adopted before this user's next Redis decision) and only then
    // the fence lifted — also for a fallback still running past the answer (it commits nothing past
    // its deadline; a COMMIT already sent may still land, and is then remembered too).
    const settle = (fallback ?? Promise.resolve(null)).then(
      (outcome) => {
        if (outcome?.grant != null) lease.remember(outcome.grant);
      },
      () => {},
    );
    settle.finally(() => {
      deps.slots.release();
      for (const key of fenceKeys) deps.fence.leave(key);
    });
  }
}
