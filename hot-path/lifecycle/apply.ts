/**
 * Applies Stripe's asynchronous Issuing events to the cache, once per event id and in any order of
 * arrival, and appends each to the outbox with the exact change it made (see scripts.ts LIFECYCLE
 * for the rules). Also releases holds Stripe never closes, once they pass their expiry.
 */
import type { Sql } from '../../shared/db/client.ts';
import type { LifecycleRecord } from '../../shared/outbox.ts';
import { ensureAccount } from '../../shared/redis/account.ts';
import type { Redis } from '../../shared/redis/client.ts';
import { unknownCardAppliedKey, unknownCardOutboxKey, userKeys } from '../../shared/redis/keys.ts';
import { runScript } from '../../shared/redis/script.ts';
import { type CardOwners, createCardOwners } from '../decision/card-owners.ts';
import { type DecisionSettings, holdExpiresAtMs } from '../decision/engine.ts';
import { LIFECYCLE, LIFECYCLE_WITHOUT_USER } from '../decision/scripts.ts';
import { limits } from '../limits.ts';
import type { LifecycleEvent } from '../stripe/events.ts';

type Reply = ['ok', string, string, string] | ['dup'] | ['missing'];

export interface LifecycleResult {
  applied: boolean;
  userId: string | null;
  holdDeltaCents: bigint;
  unsettledDeltaCents: bigint;
}

export interface Lifecycle {
  apply(event: LifecycleEvent, rawBody: string): Promise<LifecycleResult>;
  /** Releases one expired hold (synthetic event `expire:<authorizationId>`). */
  expireHold(userId: string, authorizationId: string): Promise<LifecycleResult>;
}

export function createLifecycle(deps: {
  redis: Redis;
  sql: Sql;
  settings: DecisionSettings;
  /** Shared with the decision engine (one memory cache of card owners); one is made if not given. */
  cardOwners?: CardOwners;
  now?: () => number;
}): Lifecycle {
  const { redis, sql, settings } = deps;
  const now = deps.now ?? Date.now;
  const prefix = settings.REDIS_KEY_PREFIX;
  const cardOwners = deps.cardOwners ?? createCardOwners({ redis, sql, prefix });

  async function ownerOf(cardId: string): Promise<string | null> {
    return (await cardOwners.lookUp(cardId)).userId;
  }

  async function run(
    userId: string | null,
    eventId: string,
    args: {
      kind: string;
      authorizationId: string;
      status: string;
      approved: boolean;
      amountCents: bigint;
      version: number;
      holdExpiresAtMs: number;
    },
    record: LifecycleRecord,
  ): Promise<LifecycleResult> {
    const json = JSON.stringify(record);
    if (userId === null) {
      const reply = await runScript<Reply>(
        redis,
        LIFECYCLE_WITHOUT_USER,
        [unknownCardAppliedKey(prefix, eventId), unknownCardOutboxKey(prefix, eventId)],
        [json, limits.appliedEventTtlS],
      );
      return { applied: reply[0] === 'ok', userId: null, holdDeltaCents: 0n, unsettledDeltaCents: 0n };
    }
    const keys = userKeys(prefix, userId);
    for (let attempt = 0; attempt < limits.reserveAttemptsMax; attempt++) {
      const reply = await runScript<Reply>(
        redis,
        LIFECYCLE,
        [
          keys.account,
          keys.holds,
          keys.holdExpiries,
          keys.authState(args.authorizationId || 'none'),
          keys.applied(eventId),
          keys.outbox,
        ],
        [
          args.kind,
          args.authorizationId,
          args.status,
          args.approved ? '1' : '0',
          args.amountCents.toString(),
          args.version,
          args.holdExpiresAtMs,
          json,
          limits.appliedEventTtlS,
          limits.authorizationStateTtlS,
        ],
      );
      if (reply[0] === 'ok') {
        return {
          applied: true,
          userId,
          holdDeltaCents: BigInt(reply[1]),
          unsettledDeltaCents: BigInt(reply[2]),
        };
      }
      if (reply[0] === 'dup') return { applied: false, userId, holdDeltaCents: 0n, unsettledDeltaCents: 0n };
      // The account is not cached (Redis restarted empty): rebuild it from Postgres, then apply.
      if (!(await ensureAccount(redis, sql, prefix, userId, now()))) break;
    }
    throw new Error(`lifecycle event ${eventId} could not be applied: the user's account is missing`);
  }

  return {
    async apply(event, rawBody) {
      if (event.type === 'issuing_transaction.created') {
        const txn = event.data.object;
        const userId = await ownerOf(txn.card);
        // Captures are negative (money out of the Issuing balance); refunds positive.
        const amount = BigInt(txn.amount < 0 ? -txn.amount : txn.amount);
        const record: LifecycleRecord = {
          kind: 'lifecycle',
          eventId: event.id,
          eventType: event.type,
          eventCreatedS: event.created,
          userId,
          cardId: txn.card,
          authorizationId: txn.authorization,
          transactionId: txn.id,
          holdDeltaCents: '0',
          unsettledDeltaCents: '0',
          capturedDeltaCents: '0',
          authorization: null,
          transactionType: txn.type,
          event: rawBody,
        };
        return run(
          userId,
          event.id,
          {
            kind: txn.type,
            authorizationId: txn.authorization ?? '',
            status: '',
            approved: false,
            amountCents: amount,
            version: 0,
            holdExpiresAtMs: 0,
          },
          record,
        );
      }
      const auth = event.data.object;
      const userId = await ownerOf(auth.card.id);
      const mcc = auth.merchant_data.category_code;
      const record: LifecycleRecord = {
        kind: 'lifecycle',
        eventId: event.id,
        eventType: event.type,
        eventCreatedS: event.created,
        userId,
        cardId: auth.card.id,
        authorizationId: auth.id,
        transactionId: null,
        holdDeltaCents: '0',
        unsettledDeltaCents: '0',
        capturedDeltaCents: '0',
        authorization: {
          status: auth.status,
          approved: auth.approved,
          amountCents: String(auth.amount),
          merchantCategoryCode: mcc,
          merchantName: auth.merchant_data.name ?? null,
          createdS: auth.created,
        },
        transactionType: null,
        event: rawBody,
      };
      return run(
        userId,
        event.id,
        {
          kind: 'auth',
          authorizationId: auth.id,
          status: auth.status,
          approved: auth.approved,
          amountCents: BigInt(auth.amount),
          version: auth.request_history.length * 1e10 + event.created,
          holdExpiresAtMs: holdExpiresAtMs(settings, mcc, auth.created * 1000),
        },
        record,
      );
    },

    async expireHold(userId, authorizationId) {
      const eventId = `expire:${authorizationId}`;
      const record: LifecycleRecord = {
        kind: 'lifecycle',
        eventId,
        eventType: 'credana.hold_expired',
        eventCreatedS: Math.floor(now() / 1000),
        userId,
        cardId: null,
        authorizationId,
        transactionId: null,
        holdDeltaCents: '0',
        unsettledDeltaCents: '0',
        capturedDeltaCents: '0',
        authorization: null,
        transactionType: null,
        event: JSON.stringify({ id: eventId, type: 'credana.hold_expired', authorization: authorizationId }),
      };
      return run(
        userId,
        eventId,
        {
          kind: 'expire',
          authorizationId,
          status: 'expired',
          approved: false,
          amountCents: 0n,
          version: 0,
          holdExpiresAtMs: 0,
        },
        record,
      );
    },
  };
}

/** Finds holds past their expiry in one user's cache and releases them. Returns how many. */
export async function sweepExpiredHolds(
  lifecycle: Lifecycle,
  redis: Redis,
  prefix: string,
  userId: string,
  nowMs: number,
): Promise<number> {
  const due = await redis.zrangebyscore(
    userKeys(prefix, userId).holdExpiries,
    '-inf',
    nowMs,
    'LIMIT',
    0,
    1000,
  );
  let released = 0;
  for (const authorizationId of due) {
    const result = await lifecycle.expireHold(userId, authorizationId);
    if (result.applied) released++;
  }
  return released;
}
