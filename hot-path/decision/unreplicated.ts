/**
 * The withdrawal of an approval too few replicas acknowledged (REDIS_WAIT_REPLICAS), for the Redis
 * decision (redis-decision.ts): its hold released and its answer stored as a decline
 * (RELEASE_UNREPLICATED).
 */
import type { LifecycleRecord } from '../../shared/outbox/records.ts';
import { utcDay } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { userKeys } from '../../shared/redis/keys.ts';
import { type RedirectPolicy, runScript } from '../../shared/redis/script.ts';
import type { AuthorizationRequestEvent } from '../../shared/stripe/events.ts';
import { RELEASE_UNREPLICATED } from './lua.ts';
import type { DecisionOutcome } from './types.ts';

export interface WithdrawDeps {
  redis: Redis;
  prefix: string;
  now: () => number;
  /** A decision script's redirects are retried only while the Redis attempt has time for them. */
  redirectPolicy: (redisDeadlineMs: number) => RedirectPolicy;
}

/**
 * An approval that fewer than REDIS_WAIT_REPLICAS replicas acknowledged: a failover now would lose
 * it, so it is not answered. Its hold is released and the answer stored as a decline
 * (RELEASE_UNREPLICATED), with a lifecycle record so Postgres books the decision and its release.
 * If the release fails, the answer is still a decline (the caller falls back, and the fallback's
 * adoption supersedes the stored approval), so an unreplicated approval is never answered.
 */
export async function withdrawUnreplicated(
  deps: WithdrawDeps,
  event: AuthorizationRequestEvent,
  userId: string,
  stored: string,
  outcome: DecisionOutcome,
  decidedAtMs: number,
  redisDeadlineMs: number,
): Promise<DecisionOutcome> {
  const { redis, prefix, now, redirectPolicy } = deps;
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
