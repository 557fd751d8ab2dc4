/**
 * The Redis decision, for the decision engine (engine.ts): card → user lookup, the borrow power from the
 * user's account snapshot (account-snapshots.ts) and in-memory prices, then EVALSHA of DECIDE, which
 * re-checks the snapshot's version, applies every rule, reserves the hold and appends the decision record
 * to the outbox stream atomically. A changed version reads the account again and retries. With
 * REDIS_WAIT_REPLICAS an approval is answered only once replicated, else withdrawn (unreplicated.ts).
 */
import { borrowPowerCents } from '../../shared/credit.ts';
import { DeadlineError } from '../../shared/deadline.ts';
import type { CardOwners } from '../../shared/lifecycle/card-owners.ts';
import type { DecisionReason, DecisionRecord } from '../../shared/outbox/records.ts';
import { holdExpiresAtMs } from '../../shared/policy/hold-expiry.ts';
import {
  encodeStoredAnswer,
  isStoredApproval,
  parseStoredAnswer,
} from '../../shared/policy/stored-answer.ts';
import { utcDay } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import {
  type UserKeys,
  unknownCardDecisionKey,
  unknownCardOutboxKey,
  userKeys,
} from '../../shared/redis/keys.ts';
import type { Market } from '../../shared/redis/market.ts';
import { type RedirectPolicy, runScript } from '../../shared/redis/script.ts';
import type { AuthorizationRequestEvent } from '../../shared/stripe/events.ts';
import { limits } from '../limits.ts';
import type { AccountSnapshot, AccountSnapshots } from './account-snapshots.ts';
import { type FallbackFence, OwnFallbackPending } from './fallback-handoff.ts';
import { DECIDE, DECIDE_WITHOUT_USER } from './lua.ts';
import type { RedisLease } from './redis-lease.ts';
import type { ReplicaWaiter } from './replica-wait.ts';
import type { DecisionOutcome, DecisionSettings } from './types.ts';
import { withdrawUnreplicated } from './unreplicated.ts';

export interface RedisDecisionDeps {
  settings: DecisionSettings;
  redis: Redis;
  market: Market;
  now: () => number;
  cardOwners: CardOwners;
  lease: RedisLease;
  snapshots: AccountSnapshots;
  /** This process's fallbacks in flight (fallback-handoff.ts). */
  fence: FallbackFence;
  /** The MCCs blocked for everyone (globallyBlockedMccs). */
  blocked: Set<string>;
  /** With REDIS_WAIT_REPLICAS > 0, the shared WAIT (replica-wait.ts); null otherwise. */
  waiter: ReplicaWaiter | null;
  /** A decision script's redirects are retried only while the Redis attempt has time for them. */
  redirectPolicy: (redisDeadlineMs: number) => RedirectPolicy;
}

type DecideReply =
  | ['ok', '0' | '1', string, DecisionReason]
  | ['dup', string]
  | ['missing']
  | ['changed', string];

/** One Redis attempt at one request. */
interface RedisAttempt {
  event: AuthorizationRequestEvent;
  rawBody: string;
  startedAtMs: number;
  decisionId: string;
  redisDeadlineMs: number;
  /** Throws once the caller gave up on the attempt (its deadline passed). */
  stillOn: () => void;
}

/** The decision's time, from its id (newDecisionId): the UTC day whose spend it counted in. */
function decidedAtOf(decisionId: string, fallbackMs: number): number {
  const ms = Number.parseInt(decisionId.slice(4, -16), 36);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : fallbackMs;
}

export function baseRecord(
  settings: DecisionSettings,
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

export async function decideInRedis(
  deps: RedisDecisionDeps,
  event: AuthorizationRequestEvent,
  rawBody: string,
  startedAtMs: number,
  decisionId: string,
  redisDeadlineMs: number,
): Promise<DecisionOutcome> {
  const { now, cardOwners, lease, snapshots, fence } = deps;
  const prefix = deps.settings.REDIS_KEY_PREFIX;
  // An attempt the caller gave up on (it answered from the fallback) must not go on to reserve: each
  // step that writes checks the deadline first. (A command already sent may still run: see
  // ADOPT_FALLBACK's 'superseded'.)
  const stillOn = () => {
    if (now() > redisDeadlineMs) throw new DeadlineError('the Redis attempt was given up');
  };
  const attempt: RedisAttempt = { event, rawBody, startedAtMs, decisionId, redisDeadlineMs, stillOn };
  const auth = event.data.object;
  const { userId, roundTrips: lookupTrips } = await cardOwners.lookUp(auth.card.id);
  stillOn();
  let roundTrips = lookupTrips;
  const nowMs = now();
  if (userId === null) return decideUnknownCard(deps, attempt, nowMs, roundTrips);
  stillOn();
  // This process's own fallback for this user may still be deciding (its Redis attempt ran out of
  // time) or its grants may not be in the cache yet: a Redis decision now could grant the same credit.
  if (fence.has(userId) || fence.has(auth.card.id)) throw new OwnFallbackPending();
  roundTrips += await lease.adoptOwn(userId);
  const keys = userKeys(prefix, userId);
  const amount = BigInt(auth.pending_request.amount);
  for (let tries = 0; tries < limits.reserveAttemptsMax; tries++) {
    const loaded = await snapshots.load(userId, keys.account);
    roundTrips += loaded.roundTrips;
    if (loaded.snapshot === 'absent') break;
    if (loaded.snapshot === 'rebuilt') continue;
    const { reply, decidedAtMs } = await reserve(deps, attempt, userId, keys, amount, loaded.snapshot);
    roundTrips++;
    const outcome = await answer(deps, attempt, userId, keys, reply, decidedAtMs, roundTrips);
    if (outcome !== undefined) return outcome;
    // The snapshot is out of date (collateral, limit or card controls changed, or the cache was
    // rebuilt): read the account again.
    snapshots.forget(userId);
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

/** A card no user owns: declined `unknown_card`, the decision stored under the event (DECIDE_WITHOUT_USER). */
async function decideUnknownCard(
  deps: RedisDecisionDeps,
  attempt: RedisAttempt,
  nowMs: number,
  lookupRoundTrips: number,
): Promise<DecisionOutcome> {
  const { redis, redirectPolicy } = deps;
  const prefix = deps.settings.REDIS_KEY_PREFIX;
  const { event, rawBody, startedAtMs, decisionId, redisDeadlineMs } = attempt;
  let roundTrips = lookupRoundTrips;
  const record = baseRecord(deps.settings, event, rawBody, null, decisionId, nowMs, startedAtMs, 'redis');
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

/** The borrow power from the snapshot, then DECIDE: every rule checked and the hold reserved, atomically. */
async function reserve(
  deps: RedisDecisionDeps,
  attempt: RedisAttempt,
  userId: string,
  keys: UserKeys,
  amount: bigint,
  snapshot: AccountSnapshot,
): Promise<{ reply: DecideReply; decidedAtMs: number }> {
  const { settings, redis, market, now, blocked, redirectPolicy } = deps;
  const { event, rawBody, startedAtMs, decisionId, redisDeadlineMs, stillOn } = attempt;
  const auth = event.data.object;
  const mcc = auth.merchant_data.category_code;
  const version = snapshot.version;
  const decidedAtMs = now();
  const power = borrowPowerCents({
    holdings: snapshot.holdings,
    assets: market.assets,
    prices: market.prices,
    nowS: Math.floor(decidedAtMs / 1000),
  });
  const limit = snapshot.creditLimitCents;
  const capCents = limit < power.borrowPowerCents ? limit : power.borrowPowerCents;
  const record = baseRecord(settings, event, rawBody, userId, decisionId, decidedAtMs, startedAtMs, 'redis');
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
  return { reply, decidedAtMs };
}

/**
 * The answer to DECIDE's reply: a new decision or a replay, an approval only once replicated (else a
 * new one is withdrawn, a replay declined with its hold kept). Undefined when the snapshot was out of
 * date ('missing', 'changed').
 */
async function answer(
  deps: RedisDecisionDeps,
  attempt: RedisAttempt,
  userId: string,
  keys: UserKeys,
  reply: DecideReply,
  decidedAtMs: number,
  roundTripsSoFar: number,
): Promise<DecisionOutcome | undefined> {
  const { waiter } = deps;
  const waitReplicas = deps.settings.REDIS_WAIT_REPLICAS;
  const { event, decisionId, redisDeadlineMs, stillOn } = attempt;
  let roundTrips = roundTripsSoFar;
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
  if (reply[0] === 'missing' || reply[0] === 'changed') return undefined;
  // A new decision, or a replay answering the stored first answer; an approval among either only once
  // replicated.
  const outcome: DecisionOutcome =
    reply[0] === 'dup'
      ? {
          ...parseStoredAnswer(reply[1]),
          source: 'redis',
          replay: true,
          redisRoundTrips: roundTrips,
          ...acked,
        }
      : {
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
  // A replay is not answered "approved" unreplicated either (its first attempt may have died between
  // its script and its WAIT), but its hold is kept: the first attempt may as well have been answered
  // "approved", and Stripe may hold that answer. Releasing the hold would then leave an approval Stripe
  // accepted outside the user's credit until Stripe's `created` put it back (docs/chaos.md, cluster
  // item 5). Kept, it errs towards less credit; `created` sets it to the answer Stripe took.
  if (outcome.replay)
    return { ...outcome, approved: false, amountCents: 0n, reason: 'replication_unconfirmed' };
  stillOn();
  return withdrawUnreplicated(
    { ...deps, prefix: deps.settings.REDIS_KEY_PREFIX },
    event,
    userId,
    reply[0] === 'dup' ? reply[1] : encodeStoredAnswer(outcome),
    outcome,
    outcome.replay ? decidedAtOf(outcome.decisionId, decidedAtMs) : decidedAtMs,
    redisDeadlineMs,
  );
}
