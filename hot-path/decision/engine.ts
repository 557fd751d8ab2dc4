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
 */
import { randomFillSync } from 'node:crypto';
import { globallyBlockedMccs } from '../../shared/controls/cash-policy.ts';
import { borrowPower, type CollateralHolding } from '../../shared/credit.ts';
import type { Sql } from '../../shared/db/client.ts';
import { DeadlineError, withDeadline } from '../../shared/deadline.ts';
import {
  type Classified,
  classifyError,
  classifyRedisCallError,
  type ErrorCode,
} from '../../shared/errors.ts';
import { type CardOwners, createCardOwners } from '../../shared/lifecycle/card-owners.ts';
import type { DecisionReason, DecisionRecord, LifecycleRecord } from '../../shared/outbox/records.ts';
import { holdExpiresAtMs } from '../../shared/policy/hold-expiry.ts';
import {
  encodeStoredAnswer,
  isStoredApproval,
  parseStoredAnswer,
} from '../../shared/policy/stored-answer.ts';
import { ensureAccount, holdingsFromAccount, utcDay } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { ACCOUNT, unknownCardDecisionKey, unknownCardOutboxKey, userKeys } from '../../shared/redis/keys.ts';
import type { Market } from '../../shared/redis/market.ts';
import {
  type ClusterRedirect,
  clusterRedirectOf,
  type RedirectPolicy,
  runScript,
} from '../../shared/redis/script.ts';
import type { AuthorizationRequestEvent } from '../../shared/stripe/events.ts';
import { limits } from '../limits.ts';
import { DECIDE, DECIDE_WITHOUT_USER, RELEASE_UNREPLICATED } from './lua.ts';
import { decideFromPostgres, type FallbackResult } from './postgres-fallback.ts';
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
  now?: () => number;
}

type DecideReply =
  | ['ok', '0' | '1', string, DecisionReason]
  | ['dup', string]
  | ['missing']
  | ['changed', string];

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

/** The decision's time, from its id (newDecisionId): the UTC day whose spend it counted in. */
function decidedAtOf(decisionId: string, fallbackMs: number): number {
  const ms = Number.parseInt(decisionId.slice(4, -16), 36);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : fallbackMs;
}

export interface DecisionEngine {
  decide(event: AuthorizationRequestEvent, rawBody: string, startedAtMs: number): Promise<DecisionOutcome>;
  /** Who may decide from where (shared with the server, which starts and stops it). */
  readonly lease: RedisLease;
}

export function createDecisionEngine(deps: DecisionEngineDeps): DecisionEngine {
  const { settings, redis, sql, market } = deps;
  const now = deps.now ?? Date.now;
  const prefix = settings.REDIS_KEY_PREFIX;
  const cardOwners = deps.cardOwners ?? createCardOwners({ redis, sql, prefix });
  const blocked = globallyBlockedMccs(settings);
  const lease =
    deps.lease ?? createRedisLease({ sql, redis, prefix, leaseMs: settings.REDIS_DECIDER_LEASE_MS });
  const onRedisFailure = deps.onRedisFailure ?? (() => {});
  const onRedisRedirect = deps.onRedisRedirect;
  /** A decision script's redirects are retried only while the Redis attempt has time for them. */
  const redirectPolicy = (redisDeadlineMs: number): RedirectPolicy => ({
    retriesMax: limits.clusterScriptRetriesMax,
    tryAgainDelayMs: limits.clusterTryAgainDelayMs,
    deadlineMs: redisDeadlineMs,
    now,
    ...(onRedisRedirect === undefined ? {} : { onRetry: onRedisRedirect }),
  });
  const onFallbackFailure = deps.onFallbackFailure ?? (() => {});
  const waitReplicas = settings.REDIS_WAIT_REPLICAS;
  const waiter =
    waitReplicas > 0 ? createReplicaWaiter(redis, waitReplicas, settings.REDIS_WAIT_TIMEOUT_MS) : null;
  // Users (and cards) with a fallback of this process in flight, counted; see decideInRedis.
  const fallbacksInFlight = new Map<string, number>();
  const enter = (key: string) => fallbacksInFlight.set(key, (fallbacksInFlight.get(key) ?? 0) + 1);
  const leave = (key: string) => {
    const n = (fallbacksInFlight.get(key) ?? 1) - 1;
    if (n <= 0) fallbacksInFlight.delete(key);
    else fallbacksInFlight.set(key, n);
  };

  // What the borrow power is computed from, per user, as last read from Redis: collateral, pending
  // withdrawals and the credit limit, with the account's version stamp. Every change to those bumps the
  // version (and a rebuilt account gets a new one, see installAccount), and the DECIDE script refuses a
  // stale version, so a decision is never made from an old snapshot: it is read again and retried. In
  // the steady state this saves the HGETALL — one Redis round trip per decision instead of two.
  const snapshots = new Map<
    string,
    { version: string; holdings: CollateralHolding[]; creditLimitCents: bigint }
  >();

  // Concurrent cold rebuilds of one account share a single flight, so a burst of swipes on a cold
  // process does not become a burst of identical Postgres queries.
  const accountFlights = new Map<string, Promise<boolean>>();

  function ensureAccountOnce(userId: string): Promise<boolean> {
    let flight = accountFlights.get(userId);
    if (flight === undefined) {
      flight = ensureAccount(redis, sql, prefix, userId, now()).finally(() => accountFlights.delete(userId));
      accountFlights.set(userId, flight);
    }
    return flight;
  }

  function baseRecord(
    event: AuthorizationRequestEvent,
    rawBody: string,
    userId: string | null,
    decisionId: string,
    nowMs: number,
    startedAtMs: number,
    source: 'redis' | 'postgres',
  ): DecisionRecord {
    const auth = event.data.object;
    const mcc = auth.merchant_data.category_code;
    return {
      kind: 'decision',
      decisionId,
      eventId: event.id,
      authorizationId: auth.id,
      userId,
      cardId: auth.card.id,
      requestedCents: String(auth.pending_request.amount),
      // The outcome fields are filled in by the script's stream fields (ok, amt, why).
      approved: false,
      approvedCents: '0',
      reason: 'system_unavailable',
      source,
      incremental: auth.request_history.length > 0,
      merchantCategoryCode: mcc,
      merchantName: auth.merchant_data.name ?? null,
      holdExpiresAtMs: holdExpiresAtMs(settings, mcc, nowMs),
      decidedAtMs: nowMs,
      latencyUs: Math.max(0, Math.round((nowMs - startedAtMs) * 1000)),
      event: rawBody,
      eventCreatedS: event.created,
    };
  }

  async function decideInRedis(
    event: AuthorizationRequestEvent,
    rawBody: string,
    startedAtMs: number,
    decisionId: string,
    redisDeadlineMs: number,
  ): Promise<DecisionOutcome> {
    // An attempt the caller gave up on (it answered from the fallback) must not go on to reserve: each
    // step that writes checks the deadline first. (A command already sent may still run: see
    // ADOPT_FALLBACK's 'superseded'.)
    const stillOn = () => {
      if (now() > redisDeadlineMs) throw new DeadlineError('the Redis attempt was given up');
    };
    const auth = event.data.object;
    const { userId, roundTrips: lookupTrips } = await cardOwners.lookUp(auth.card.id);
    stillOn();
    let roundTrips = lookupTrips;
    const nowMs = now();
    if (userId === null) {
      const record = baseRecord(event, rawBody, null, decisionId, nowMs, startedAtMs, 'redis');
      const reply = await runScript<DecideReply>(
        redis,
        DECIDE_WITHOUT_USER,
        [unknownCardDecisionKey(prefix, event.id), unknownCardOutboxKey(prefix, event.id)],
        [decisionId, JSON.stringify(record), limits.decisionTtlS, 'unknown_card'],
        redirectPolicy(redisDeadlineMs),
      );
      roundTrips++;
      if (reply[0] === 'dup')
        return { ...parseStoredAnswer(reply[1]), source: 'redis', replay: true, redisRoundTrips: roundTrips };
      return {
        approved: false,
        amountCents: 0n,
        reason: 'unknown_card',
        decisionId,
        source: 'redis',
        replay: false,
        redisRoundTrips: roundTrips,
      };
    }
    stillOn();
    // This process's own fallback for this user may still be deciding (its Redis attempt ran out of
    // time) or its grants may not be in the cache yet: a Redis decision now could grant the same credit.
    if (fallbacksInFlight.has(userId) || fallbacksInFlight.has(auth.card.id)) throw new OwnFallbackPending();
    roundTrips += await lease.adoptOwn(userId);
    const keys = userKeys(prefix, userId);
    const mcc = auth.merchant_data.category_code;
    const amount = BigInt(auth.pending_request.amount);
    for (let attempt = 0; attempt < limits.reserveAttemptsMax; attempt++) {
      let snapshot = snapshots.get(userId);
      if (snapshot === undefined) {
        const account = await redis.hgetall(keys.account);
        roundTrips++;
        const version = account[ACCOUNT.version];
        if (version === undefined) {
          const exists = await ensureAccountOnce(userId);
          roundTrips += 2;
          if (!exists) break;
          continue;
        }
        snapshot = {
          version,
          holdings: holdingsFromAccount(account),
          creditLimitCents: BigInt(account[ACCOUNT.creditLimitCents] ?? '0'),
        };
        if (snapshots.size >= limits.accountSnapshotsMax) snapshots.clear();
        snapshots.set(userId, snapshot);
      }
      const version = snapshot.version;
      const decidedAtMs = now();
      const power = borrowPower({
        holdings: snapshot.holdings,
        assets: market.assets,
        prices: market.prices,
        nowS: Math.floor(decidedAtMs / 1000),
      });
      const limit = snapshot.creditLimitCents;
      const capCents = limit < power.borrowPowerCents ? limit : power.borrowPowerCents;
      const record = baseRecord(event, rawBody, userId, decisionId, decidedAtMs, startedAtMs, 'redis');
      stillOn();
      const decideKeys = [
        keys.account,
        keys.cards,
        keys.holds,
        keys.holdExpiries,
        keys.decision(event.id),
        keys.daySpend(utcDay(decidedAtMs)),
        keys.velocity,
        keys.outbox,
        keys.authState(auth.id),
      ];
      const decideArgs = [
        version,
        auth.card.id,
        auth.id,
        amount.toString(),
        auth.pending_request.is_amount_controllable ? '1' : '0',
        mcc,
        decidedAtMs,
        capCents.toString(),
        power.staleAssetIds.length > 0 ? '1' : '0',
        settings.VELOCITY_LIMIT_PER_MIN,
        blocked.has(mcc) ? '1' : '0',
        decisionId,
        record.holdExpiresAtMs,
        limits.decisionTtlS,
        JSON.stringify(record),
        // The authorization's version after this decision: one more request than it had.
        (auth.request_history.length + 1) * 1e10 + event.created,
        limits.authorizationStateTtlS,
      ];
      const reply = await runScript<DecideReply>(
        redis,
        DECIDE,
        decideKeys,
        decideArgs,
        redirectPolicy(redisDeadlineMs),
      );
      roundTrips++;
      // With REDIS_WAIT_REPLICAS, an approval (new or replayed) is answered only once replicated: one
      // WAIT after the reply, shared with the approvals of the same moment (replica-wait.ts). Declines
      // do not wait.
      const approvedReply =
        (reply[0] === 'ok' && reply[1] === '1') || (reply[0] === 'dup' && isStoredApproval(reply[1]));
      let replicasAcked = 0;
      if (waiter !== null && approvedReply) {
        replicasAcked = await waiter.acknowledged(keys.outbox);
        roundTrips++;
      }
      const acked = waiter !== null && approvedReply ? { replicasAcked } : {};
      switch (reply[0]) {
        case 'ok': {
          const outcome: DecisionOutcome = {
            approved: reply[1] === '1',
            amountCents: BigInt(reply[2]),
            reason: reply[3],
            decisionId,
            source: 'redis',
            replay: false,
            redisRoundTrips: roundTrips,
            ...acked,
          };
          if (!outcome.approved || replicasAcked >= waitReplicas) return outcome;
          stillOn();
          return withdraw(event, userId, encodeStoredAnswer(outcome), outcome, decidedAtMs, redisDeadlineMs);
        }
        case 'dup': {
          // A replay answers the stored first answer; an approval among them only once replicated too
          // (the first attempt may have died between its script and its WAIT).
          const outcome: DecisionOutcome = {
            ...parseStoredAnswer(reply[1]),
            source: 'redis',
            replay: true,
            redisRoundTrips: roundTrips,
            ...acked,
          };
          if (!outcome.approved || replicasAcked >= waitReplicas) return outcome;
          stillOn();
          return withdraw(
            event,
            userId,
            reply[1],
            outcome,
            decidedAtOf(outcome.decisionId, decidedAtMs),
            redisDeadlineMs,
          );
        }
        case 'missing':
        case 'changed':
          // The snapshot is out of date (collateral, limit or card controls changed, or the cache was
          // rebuilt): read the account again.
          snapshots.delete(userId);
          continue;
      }
    }
    // The user does not exist, or the account kept changing under us: decline, recorded.
    return {
      approved: false,
      amountCents: 0n,
      reason: 'system_unavailable',
      decisionId,
      source: 'none',
      replay: false,
      redisRoundTrips: roundTrips,
    };
  }

  /**
   * An approval that fewer than REDIS_WAIT_REPLICAS replicas acknowledged: a failover now would lose
   * it, so it is not answered. Its hold is released and the answer stored as a decline
   * (RELEASE_UNREPLICATED), with a lifecycle record so Postgres books the decision and its release.
   * If the release fails, the answer is still a decline (the caller falls back, and the fallback's
   * adoption supersedes the stored approval), so an unreplicated approval is never answered.
   */
  async function withdraw(
    event: AuthorizationRequestEvent,
    userId: string,
    stored: string,
    outcome: DecisionOutcome,
    decidedAtMs: number,
    redisDeadlineMs: number,
  ): Promise<DecisionOutcome> {
    const auth = event.data.object;
    const keys = userKeys(prefix, userId);
    const eventId = `unreplicated:${event.id}`;
    const mcc = auth.merchant_data.category_code;
    const incremental = auth.request_history.length > 0;
    const record: LifecycleRecord = {
      kind: 'lifecycle',
      eventId,
      eventType: 'credana.replication_unconfirmed',
      eventCreatedS: Math.floor(now() / 1000),
      userId,
      cardId: auth.card.id,
      authorizationId: auth.id,
      transactionId: null,
      holdDeltaCents: '0',
      unsettledDeltaCents: '0',
      capturedDeltaCents: '0',
      // What Stripe will say of a first request we declined; an incremental one leaves the
      // authorization as it was (only this request's grant is withdrawn).
      authorization: incremental
        ? null
        : {
            status: 'closed',
            approved: false,
            amountCents: '0',
            merchantCategoryCode: mcc,
            merchantName: auth.merchant_data.name ?? null,
            createdS: auth.created,
          },
      transactionType: null,
      event: JSON.stringify({
        id: eventId,
        type: 'credana.replication_unconfirmed',
        authorization: auth.id,
        decision: outcome.decisionId,
      }),
    };
    await runScript(
      redis,
      RELEASE_UNREPLICATED,
      [
        keys.account,
        keys.holds,
        keys.holdExpiries,
        keys.decision(event.id),
        keys.daySpend(utcDay(decidedAtMs)),
        keys.outbox,
      ],
      [stored, auth.id, JSON.stringify(record)],
      redirectPolicy(redisDeadlineMs),
    );
    return {
      ...outcome,
      approved: false,
      amountCents: 0n,
      reason: 'replication_unconfirmed',
      redisRoundTrips: outcome.redisRoundTrips + 1,
    };
  }

  function declined(decisionId: string, reason: DecisionReason, redisRoundTrips: number): DecisionOutcome {
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

  /**
   * The Redis attempt, inside its own budget. Undefined when it failed: the caller falls back. A late
   * reply is not waited for; what the attempt may still do in Redis is superseded when the fallback's
   * decision is adopted (ADOPT_FALLBACK), and Postgres never books it (the fallback holds its ledger ref).
   */
  async function attemptRedis(
    event: AuthorizationRequestEvent,
    rawBody: string,
    startedAtMs: number,
    decisionId: string,
    deadlineMs: number,
  ): Promise<DecisionOutcome | undefined> {
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
        decideInRedis(event, rawBody, startedAtMs, decisionId, redisDeadlineMs),
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
      // this user's next Redis decision waits for it (fallbacksInFlight, then adoptOwn). A Redis that
      // hangs for everyone is found by the lease's PING, which then makes the process suspect.
      // A cluster redirect is not Redis away either: the slot is moving, Redis answers (decisions for
      // users on other slots go on from Redis).
      if (code !== 'deadline' && code !== 'redis_redirect') lease.markSuspect();
      return undefined;
    }
  }

  return {
    lease,
    async decide(event, rawBody, startedAtMs) {
      const decisionId = newDecisionId(startedAtMs);
      const deadline = startedAtMs + settings.DECISION_BUDGET_MS - limits.responseMarginMs;
      const amount = event.data.object.pending_request.amount;
      if (event.data.object.pending_request.currency !== 'usd' || amount > limits.amountCentsMax) {
        return declined(decisionId, 'invalid_request', 0);
      }
      const fromRedis = await attemptRedis(event, rawBody, startedAtMs, decisionId, deadline);
      if (fromRedis !== undefined) return fromRedis;
      // Redis is down, slow or not yet caught up: decide from Postgres in the time left.
      const remainingMs = deadline - now();
      if (remainingMs < 5) return declined(decisionId, 'system_unavailable', 0);
      // Until this fallback has committed or given up, and its grant is remembered, no Redis decision
      // of this process is made for its card or user (the user is known here once the card was seen).
      const cardId = event.data.object.card.id;
      const knownUser = cardOwners.known(cardId);
      const fenceKeys = knownUser === undefined ? [cardId] : [cardId, knownUser];
      for (const key of fenceKeys) enter(key);
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
          for (const key of fenceKeys) leave(key);
        });
      }
    },
  };
}

/** This process's own fallback for the user is in flight: decide this request from Postgres too. */
class OwnFallbackPending extends Error {
  readonly code = 'own_fallback_pending';
}

/** A dependency away or refusing us (shared/errors.ts faults `environment` and `deployment`), not a bug. */
function isOutage(cause: Classified): boolean {
  return cause.fault === 'environment' || cause.fault === 'deployment';
}
