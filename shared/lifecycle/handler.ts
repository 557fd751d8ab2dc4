/**
 * Applies Stripe's asynchronous Issuing events to the cache, once per event id and in any order of
 * arrival, and appends each to the outbox with the exact change it made (see lua.ts LIFECYCLE
 * for the rules). Also releases holds Stripe never closes, once they pass their expiry.
 *
 * Stripe's signs (shared/reference/stripe-issuing.md §2, samples D and E): a transaction's `amount` is
 * what it does to the Issuing balance. A `capture` is negative (money out: a debit to the user), and a
 * positive capture is a capture reversal (money back: a credit). A `refund` is positive (a credit), and
 * a negative refund is a refund reversal (a debit). Credits are bounded by what the authorization
 * captured (ARCHITECTURE.md §3.10); the rest is held for review, never spendable.
 *
 * Only USD moves cents: the card program is in USD, and an event in another currency (a misconfigured
 * card or account) is recorded as it came (card_events, through the outbox, moving nothing) and
 * reported as `rejected: 'unsupported_currency'`, so nothing is lost and a person can book it.
 */
import type { Config } from '../config.ts';
import type { Sql } from '../db/client.ts';
import { withDeadline } from '../deadline.ts';
import { classifyError, RetryableError } from '../errors.ts';
import type { LifecycleRecord } from '../outbox/records.ts';
import { capturedCentsListed } from '../policy/captured-listed.ts';
import { capturedHoldExpiresAtMs, type HoldExpirySettings, holdExpiresAtMs } from '../policy/hold-expiry.ts';
import { policyLimits } from '../policy/limits.ts';
import { ensureAccount } from '../redis/account.ts';
import type { Redis } from '../redis/client.ts';
import { unknownCardAppliedKey, unknownCardOutboxKey, userKeys } from '../redis/keys.ts';
import { runScript } from '../redis/script.ts';
import type { LifecycleEvent } from '../stripe/events.ts';
import { adoptPendingOfAuthorization } from './adoption.ts';
import { type CardOwners, createCardOwners } from './card-owners.ts';
import { lifecycleLimits } from './limits.ts';
import { LIFECYCLE, LIFECYCLE_WITHOUT_USER } from './lua.ts';

/** What the handlers read of the configuration: the cache's key prefix and the hold-expiry policy. */
export type LifecycleSettings = Pick<Config, 'REDIS_KEY_PREFIX'> & HoldExpirySettings;

type Reply =
  | ['ok', string, string, string, string?, string?]
  | ['dup']
  | ['missing']
  | ['kept']
  | ['wrong_user'];

/** Why (part of) a credit was held for review instead of lowering the user's debt. */
export type ReviewReason = 'unlinked' | 'beyond_captured' | 'settled' | 'captured_later';

export interface LifecycleResult {
  applied: boolean;
  userId: string | null;
  holdDeltaCents: bigint;
  unsettledDeltaCents: bigint;
  /**
   * Cents of a refund (or capture reversal) not credited, booked to the review account; negative when
   * a capture made an earlier held refund creditable (reason `captured_later`).
   */
  reviewCents: bigint;
  reviewReason: ReviewReason | null;
  /** Set when the event was recorded but moved nothing because it cannot be booked. */
  rejected: 'unsupported_currency' | null;
}

export interface Lifecycle {
  apply(event: LifecycleEvent, rawBody: string): Promise<LifecycleResult>;
  /**
   * Releases one expired hold (synthetic event `expire:<authorizationId>`). A closed authorization's
   * captured part is kept until its own expiry (applied: false).
   */
  expireHold(userId: string, authorizationId: string, nowMs?: number): Promise<LifecycleResult>;
}

/** The only currency the program books. */
const BOOKED_CURRENCY = 'usd';

const nothing = (userId: string | null, applied: boolean): LifecycleResult => ({
  applied,
  userId,
  holdDeltaCents: 0n,
  unsettledDeltaCents: 0n,
  reviewCents: 0n,
  reviewReason: null,
  rejected: null,
});

/** How a transaction moves money: Stripe's type and sign, mapped onto the script's kinds. */
export function transactionMovement(txn: { type: 'capture' | 'refund'; amount: number }): {
  kind: 'debit' | 'credit';
  /** 'refund_reversal' for a negative refund (it makes captures refundable again). */
  variant: '' | 'refund_reversal';
  amountCents: bigint;
} {
  const magnitude = BigInt(Math.abs(txn.amount));
  if (txn.type === 'capture') {
    // Negative: money out of the Issuing balance (a capture). Positive: a capture reversal.
    return txn.amount > 0
      ? { kind: 'credit', variant: '', amountCents: magnitude }
      : { kind: 'debit', variant: '', amountCents: magnitude };
  }
  // Positive: a refund. Negative: a refund reversal (the merchant took the refund back).
  return txn.amount < 0
    ? { kind: 'debit', variant: 'refund_reversal', amountCents: magnitude }
    : { kind: 'credit', variant: '', amountCents: magnitude };
}

export function createLifecycle(deps: {
  redis: Redis;
  sql: Sql;
  settings: LifecycleSettings;
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

  const ctx: LifecycleContext = {
    redis,
    sql,
    settings,
    prefix,
    now,
    ownerOf,
    resolveOwnerAgain: (cardId) => cardOwners.resolveAgain(cardId),
  };

  return {
    async apply(event, rawBody) {
      if (event.type === 'issuing_transaction.created') return applyTransaction(ctx, event, rawBody);
      return applyAuthorization(ctx, event, rawBody);
    },

    async expireHold(userId, authorizationId, nowMs = now()) {
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
      return runLifecycleScript(
        ctx,
        userId,
        eventId,
        {
          kind: 'expire',
          authorizationId,
          cardId: null,
          status: 'expired',
          approved: false,
          amountCents: 0n,
          version: 0,
          holdExpiresAtMs: 0,
          stripeCapturedCents: -1,
          nowMs,
        },
        record,
      );
    },
  };
}

/** What the pieces of one lifecycle share: its connections, settings, clock and card-owner lookup. */
interface LifecycleContext {
  redis: Redis;
  sql: Sql;
  settings: LifecycleSettings;
  prefix: string;
  now: () => number;
  ownerOf: (cardId: string) => Promise<string | null>;
  /** Forgets the remembered owner and asks Postgres (CardOwners.resolveAgain). */
  resolveOwnerAgain: (cardId: string) => Promise<string | null>;
}

type TransactionEvent = Extract<LifecycleEvent, { type: 'issuing_transaction.created' }>;
type AuthorizationEvent = Exclude<LifecycleEvent, TransactionEvent>;

/** The arguments of one LIFECYCLE script run (see lua.ts). */
interface ScriptArgs {
  kind: 'auth' | 'debit' | 'credit' | 'expire';
  authorizationId: string;
  /** The event's card, checked against the user's cached cards; null for an expiry (no card). */
  cardId: string | null;
  status: string;
  approved: boolean;
  amountCents: bigint;
  version: number;
  holdExpiresAtMs: number;
  stripeCapturedCents: number;
  /** The time an `expire` is judged at. */
  nowMs?: number;
}

/** Applies an `issuing_transaction.created` event: a capture, refund or one of their reversals. */
async function applyTransaction(
  ctx: LifecycleContext,
  event: TransactionEvent,
  rawBody: string,
): Promise<LifecycleResult> {
  const txn = event.data.object;
  const userId = await ctx.ownerOf(txn.card);
  const booked = txn.currency.toLowerCase() === BOOKED_CURRENCY;
  const record: LifecycleRecord = {
    kind: 'lifecycle',
    eventId: event.id,
    eventType: event.type,
    eventCreatedS: event.created,
    userId,
    cardId: txn.card,
    // An event we do not book stays off the authorization and the ledger (card_events only).
    authorizationId: booked ? txn.authorization : null,
    transactionId: txn.id,
    holdDeltaCents: '0',
    unsettledDeltaCents: '0',
    capturedDeltaCents: '0',
    authorization: null,
    transactionType: booked ? txn.type : null,
    event: rawBody,
  };
  if (!booked)
    return { ...nothing(userId, await recordOnly(ctx, event.id, record)), rejected: 'unsupported_currency' };
  const movement = transactionMovement(txn);
  return runLifecycleScript(
    ctx,
    userId,
    event.id,
    {
      kind: movement.kind,
      authorizationId: txn.authorization ?? '',
      cardId: txn.card,
      status: movement.variant,
      approved: false,
      amountCents: movement.amountCents,
      version: 0,
      holdExpiresAtMs: 0,
      stripeCapturedCents: -1,
    },
    record,
  );
}

/** Applies an `issuing_authorization.created` or `.updated` event: the hold follows the authorization. */
async function applyAuthorization(
  ctx: LifecycleContext,
  event: AuthorizationEvent,
  rawBody: string,
): Promise<LifecycleResult> {
  const { settings } = ctx;
  const auth = event.data.object;
  const userId = await ctx.ownerOf(auth.card.id);
  const mcc = auth.merchant_data.category_code;
  const booked = auth.currency.toLowerCase() === BOOKED_CURRENCY;
  const record: LifecycleRecord = {
    kind: 'lifecycle',
    eventId: event.id,
    eventType: event.type,
    eventCreatedS: event.created,
    userId,
    cardId: auth.card.id,
    authorizationId: booked ? auth.id : null,
    transactionId: null,
    holdDeltaCents: '0',
    unsettledDeltaCents: '0',
    capturedDeltaCents: '0',
    authorization: booked
      ? {
          status: auth.status,
          approved: auth.approved,
          amountCents: String(auth.amount),
          merchantCategoryCode: mcc,
          merchantName: auth.merchant_data.name ?? null,
          createdS: auth.created,
        }
      : null,
    transactionType: null,
    event: rawBody,
  };
  if (!booked)
    return { ...nothing(userId, await recordOnly(ctx, event.id, record)), rejected: 'unsupported_currency' };
  // A closed authorization's captured part stays held until its transactions are booked, and at
  // least CAPTURE_BOOKING_WAIT_S after the close (Stripe retries the transaction event for days).
  const expiresAtMs =
    auth.status === 'closed'
      ? Math.max(
          holdExpiresAtMs(settings, mcc, auth.created * 1000),
          capturedHoldExpiresAtMs(event.created * 1000),
        )
      : holdExpiresAtMs(settings, mcc, auth.created * 1000);
  return runLifecycleScript(
    ctx,
    userId,
    event.id,
    {
      kind: 'auth',
      authorizationId: auth.id,
      cardId: auth.card.id,
      status: auth.status,
      approved: auth.approved,
      amountCents: BigInt(auth.amount),
      version: auth.request_history.length * 1e10 + event.created,
      holdExpiresAtMs: expiresAtMs,
      stripeCapturedCents: capturedCentsListed(auth.transactions),
    },
    record,
  );
}

/** Records an event that moves no cached money (unknown card, unsupported currency). */
async function recordOnly(ctx: LifecycleContext, eventId: string, record: LifecycleRecord): Promise<boolean> {
  const { redis, prefix } = ctx;
  const reply = await runScript<Reply>(
    redis,
    LIFECYCLE_WITHOUT_USER,
    [unknownCardAppliedKey(prefix, eventId), unknownCardOutboxKey(prefix, eventId)],
    [JSON.stringify(record), lifecycleLimits.appliedEventTtlS],
  );
  return reply[0] === 'ok';
}

/**
 * Runs the LIFECYCLE script for one event of its card's owner (or records it when the card has no
 * user). Defence in depth on the money path: if the owner this process resolved does not hold the card
 * in the cache (a wrong card → user view, as a scrambled Redis reply once produced: docs/hot-path.md),
 * the event is not booked to it. The owner is resolved once more from Postgres (which repairs the card
 * index and the owner's cached cards) and the event applied to that owner; still inconsistent, it is
 * refused with RetryableError('card_owner_mismatch'), nothing booked, and Stripe retries it.
 */
async function runLifecycleScript(
  ctx: LifecycleContext,
  userId: string | null,
  eventId: string,
  args: ScriptArgs,
  record: LifecycleRecord,
): Promise<LifecycleResult> {
  if (userId === null) return nothing(null, await recordOnly(ctx, eventId, record));
  const first = await applyToUser(ctx, userId, eventId, args, record);
  if (first !== 'wrong_user') return first;
  const cardId = args.cardId ?? '';
  const owner = await ctx.resolveOwnerAgain(cardId);
  // No such card in Postgres: recorded like any unknown card's event, moving nothing.
  if (owner === null) return nothing(null, await recordOnly(ctx, eventId, { ...record, userId: null }));
  const second = await applyToUser(ctx, owner, eventId, args, record);
  if (second !== 'wrong_user') return second;
  throw new RetryableError(
    'card_owner_mismatch',
    `lifecycle event ${eventId}: card ${cardId} is not among its owner's cached cards; refused, nothing booked`,
  );
}

/**
 * Applies one event to one user's cache (its record names that user). 'wrong_user': the event's card
 * is not among the user's cached cards, nothing applied.
 */
async function applyToUser(
  ctx: LifecycleContext,
  userId: string,
  eventId: string,
  args: ScriptArgs,
  record: LifecycleRecord,
): Promise<LifecycleResult | 'wrong_user'> {
  const { redis, sql, prefix, now } = ctx;
  const keys = userKeys(prefix, userId);
  const json = JSON.stringify({ ...record, userId });
  // An event Postgres has already booked while the cache has no marker for it: the cache lost its data
  // (Redis restarted empty) and was rebuilt from Postgres, which has the event's effect. Applying it
  // again would move the cache and not Postgres (the writer books an event id once): chaos item 12.
  if (await bookedWithoutMarker(ctx, keys.applied(eventId), eventId)) return nothing(userId, false);
  // A fallback grant of this authorization not yet in the cache is adopted first, so the change is
  // computed against the hold Postgres has (chaos bug 2, docs/hot-path.md).
  if (args.authorizationId !== '') {
    await adoptPendingOfAuthorization(
      sql,
      redis,
      prefix,
      userId,
      args.authorizationId,
      lifecycleLimits.pendingGrantCheckMs,
    );
  }
  for (let attempt = 0; attempt < lifecycleLimits.applyAttemptsMax; attempt++) {
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
        keys.cards,
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
        lifecycleLimits.appliedEventTtlS,
        policyLimits.authorizationStateTtlS,
        args.stripeCapturedCents,
        args.nowMs ?? now(),
        args.cardId ?? '',
      ],
    );
    if (reply[0] === 'ok') {
      const reviewCents = BigInt(reply[4] ?? '0');
      return {
        applied: true,
        userId,
        holdDeltaCents: BigInt(reply[1]),
        unsettledDeltaCents: BigInt(reply[2]),
        reviewCents,
        reviewReason: reviewCents !== 0n ? ((reply[5] || 'beyond_captured') as ReviewReason) : null,
        rejected: null,
      };
    }
    if (reply[0] === 'dup' || reply[0] === 'kept') return nothing(userId, false);
    if (reply[0] === 'wrong_user') return 'wrong_user';
    // The account is not cached (Redis restarted empty): rebuild it from Postgres, then apply.
    if (!(await ensureAccount(redis, sql, prefix, userId, now()))) {
      // No such user: it holds no card either (a card → user view naming a user that does not exist).
      if (args.cardId !== null) return 'wrong_user';
      break;
    }
  }
  throw new Error(`lifecycle event ${eventId} could not be applied: the user's account is missing`);
}

/** Per Postgres client: until when (performance.now()) events skip the booked-in-Postgres check. */
const bookedCheckPausedUntil = new WeakMap<Sql, number>();

/**
 * Whether the event is in Postgres (`card_events`) while the cache has no applied marker for it; then
 * the marker is set again. Postgres away or slower than `pendingGrantCheckMs`: false (the event is
 * applied as before; the check pauses for a while so an outage does not slow every event). A bug throws.
 */
async function bookedWithoutMarker(
  ctx: LifecycleContext,
  markerKey: string,
  eventId: string,
): Promise<boolean> {
  const { redis, sql } = ctx;
  if ((await redis.exists(markerKey)) === 1) return false;
  if (performance.now() < (bookedCheckPausedUntil.get(sql) ?? 0)) return false;
  let booked: boolean;
  try {
    const rows = await withDeadline(
      sql<{ id: string }[]>`select id from card_events where id = ${eventId} limit 1`,
      lifecycleLimits.pendingGrantCheckMs,
    );
    booked = rows.length > 0;
  } catch (error) {
    const { fault } = classifyError(error);
    if (fault !== 'environment' && fault !== 'deployment') throw error;
    bookedCheckPausedUntil.set(sql, performance.now() + lifecycleLimits.pendingGrantCheckPauseMs);
    return false;
  }
  if (booked) await redis.set(markerKey, '1', 'EX', lifecycleLimits.appliedEventTtlS, 'NX');
  return booked;
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
    const result = await lifecycle.expireHold(userId, authorizationId, nowMs);
    if (result.applied) released++;
  }
  return released;
}
