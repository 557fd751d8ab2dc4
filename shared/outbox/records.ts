/**
 * The outbox record: what the hot path appends to its shard's Redis stream in the same atomic step
 * as the cache change it describes, and what the ledger writer (or the QStash receiver) applies to
 * Postgres. Deltas are the exact changes Redis made, so Postgres replays Redis instead of
 * re-deriving it — which is what keeps the two equal.
 *
 * Stream entry fields: `r` (JSON of the record, with amounts as decimal strings), plus the outcome
 * fields the Lua script fills in.
 */
import { z } from 'zod';

const amount = z.string().regex(/^-?\d{1,16}$/, 'integer cents');
const id = z.string().min(1).max(255);

export const decisionRecordSchema = z.object({
  kind: z.literal('decision'),
  decisionId: id,
  eventId: id,
  authorizationId: id,
  userId: z.string().uuid().nullable(),
  cardId: id,
  requestedCents: amount,
  approved: z.boolean(),
  approvedCents: amount,
  reason: z.string().min(1).max(64),
  source: z.enum(['redis', 'postgres']),
  /** True when this decision added to an existing authorization (an incremental authorization). */
  incremental: z.boolean(),
  merchantCategoryCode: z.string().max(8).nullable(),
  merchantName: z.string().max(255).nullable(),
  holdExpiresAtMs: z.number().int().nonnegative(),
  decidedAtMs: z.number().int().nonnegative(),
  latencyUs: z.number().int().nonnegative(),
  /** The raw Stripe event body, stored in card_events. */
  event: z.string().max(1_048_576),
  eventCreatedS: z.number().int().nonnegative(),
});

export const lifecycleRecordSchema = z.object({
  kind: z.literal('lifecycle'),
  eventId: id,
  eventType: z.string().max(128),
  eventCreatedS: z.number().int().nonnegative(),
  userId: z.string().uuid().nullable(),
  cardId: z.string().max(255).nullable(),
  authorizationId: z.string().max(255).nullable(),
  transactionId: z.string().max(255).nullable(),
  /** What the event did to the cache: hold change (negative = release), unsettled change, captured change. */
  holdDeltaCents: amount,
  unsettledDeltaCents: amount,
  capturedDeltaCents: amount,
  /** The authorization as Stripe last described it, when the event carries one. */
  authorization: z
    .object({
      status: z.enum(['pending', 'closed', 'reversed', 'expired']),
      approved: z.boolean(),
      amountCents: amount,
      merchantCategoryCode: z.string().max(8).nullable(),
      merchantName: z.string().max(255).nullable(),
      createdS: z.number().int().nonnegative(),
    })
    .nullable(),
  transactionType: z.enum(['capture', 'refund']).nullable(),
  event: z.string().max(1_048_576),
});

export const outboxRecordSchema = z.discriminatedUnion('kind', [decisionRecordSchema, lifecycleRecordSchema]);
export type DecisionRecord = z.infer<typeof decisionRecordSchema>;
export type LifecycleRecord = z.infer<typeof lifecycleRecordSchema>;
export type OutboxRecord = z.infer<typeof outboxRecordSchema>;

/** Reason codes of a decision, stable for Stripe metadata, metrics, Postgres and the dashboard. */
export const DECLINE_REASONS = [
  'unknown_card',
  'card_inactive',
  'card_frozen',
  'account_inactive',
  'blocked_mcc',
  'velocity_limit',
  'daily_limit',
  'stale_price',
  'insufficient_credit',
  'fallback_limit',
  'invalid_request',
  'system_unavailable',
  // An approval no replica confirmed in time (REDIS_WAIT_REPLICAS): withdrawn, its hold released.
  'replication_unconfirmed',
] as const;
export type DeclineReason = (typeof DECLINE_REASONS)[number];
export const APPROVE_REASONS = ['approved', 'partial'] as const;
export type DecisionReason = DeclineReason | (typeof APPROVE_REASONS)[number];

/** One stream entry as read from Redis. */
export interface RawEntry {
  stream: string;
  id: string;
  /** The entry's field/value pairs. */
  fields: Record<string, string>;
}

/** The body published for one stream entry; the receiver rebuilds the entry from it. */
export interface RelayedEntry {
  stream: string;
  id: string;
  /** The id of the entry before this one in its stream when published; null when none was left. */
  prev: string | null;
  fields: Record<string, string>;
  /**
   * Set when the entry itself could not be sent (its body over the receiver's limit, or refused by
   * QStash as too large): the relay dead-lettered it, and this stub (no fields) only moves its shard
   * past it in order, so one such entry never blocks the shard.
   */
  dropped?: 'too_large' | undefined;
}
