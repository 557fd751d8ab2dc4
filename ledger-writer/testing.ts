/**
 * For the ledger writer's tests and benchmarks: synthetic outbox entries (the same record shapes and
 * outcome fields the hot path's scripts write, see hot-path/decision/lua.ts and
 * shared/lifecycle/lua.ts, without the hot path), and the outbox's length, which is what is not
 * yet written (the writer deletes what it committed).
 */
import { randomBytes } from 'node:crypto';
import type { DecisionRecord, LifecycleRecord } from '../shared/outbox/records.ts';
import type { Redis } from '../shared/redis/client.ts';
import { allOutboxKeys, userKeys } from '../shared/redis/keys.ts';

const rid = () => randomBytes(8).toString('hex');

/** Field/value pairs of a decision entry that granted `grantedCents` (0 = declined). */
export function decisionFields(o: {
  userId: string | null;
  cardId: string;
  grantedCents: bigint;
  requestedCents?: bigint;
  authorizationId?: string;
  eventId?: string;
  createdS?: number;
  /** The Stripe event's JSON text (a minimal one when not given). */
  event?: string;
}): string[] {
  const eventId = o.eventId ?? `evt_${rid()}`;
  const nowMs = Date.now();
  const record: DecisionRecord = {
    kind: 'decision',
    decisionId: `dec_${rid()}`,
    eventId,
    authorizationId: o.authorizationId ?? `iauth_${rid()}`,
    userId: o.userId,
    cardId: o.cardId,
    requestedCents: String(o.requestedCents ?? o.grantedCents),
    approved: false,
    approvedCents: '0',
    reason: 'system_unavailable',
    source: 'redis',
    incremental: false,
    merchantCategoryCode: '5411',
    merchantName: 'TEST GROCER',
    holdExpiresAtMs: nowMs + 7 * 86_400_000,
    decidedAtMs: nowMs,
    latencyUs: 250,
    event: o.event ?? JSON.stringify({ id: eventId, type: 'issuing_authorization.request' }),
    eventCreatedS: o.createdS ?? Math.floor(nowMs / 1000),
  };
  const approved = o.grantedCents > 0n;
  return [
    'r',
    JSON.stringify(record),
    'ok',
    approved ? '1' : '0',
    'amt',
    o.grantedCents.toString(),
    'why',
    approved ? 'approved' : 'insufficient_credit',
  ];
}

/** Field/value pairs of a capture (hold → unsettled) on an authorization. */
export function captureFields(o: {
  userId: string;
  cardId: string;
  authorizationId: string;
  amountCents: bigint;
  heldBeforeCents: bigint;
  eventId?: string;
}): string[] {
  const eventId = o.eventId ?? `evt_${rid()}`;
  const record: LifecycleRecord = {
    kind: 'lifecycle',
    eventId,
    eventType: 'issuing_transaction.created',
    eventCreatedS: Math.floor(Date.now() / 1000),
    userId: o.userId,
    cardId: o.cardId,
    authorizationId: o.authorizationId,
    transactionId: `ipi_${rid()}`,
    holdDeltaCents: '0',
    unsettledDeltaCents: '0',
    capturedDeltaCents: '0',
    authorization: null,
    transactionType: 'capture',
    event: JSON.stringify({ id: eventId, type: 'issuing_transaction.created' }),
  };
  const release = o.amountCents < o.heldBeforeCents ? o.amountCents : o.heldBeforeCents;
  return [
    'r',
    JSON.stringify(record),
    'hd',
    (-release).toString(),
    'ud',
    o.amountCents.toString(),
    'cd',
    o.amountCents.toString(),
  ];
}

/** Appends an entry to the user's shard stream (or the given stream), as the scripts do. */
export async function addEntry(
  redis: Redis,
  prefix: string,
  userId: string,
  fields: string[],
): Promise<string> {
  const id = await redis.xadd(userKeys(prefix, userId).outbox, '*', ...fields);
  return id ?? '';
}

/** Entries in all of a prefix's outbox streams (one XLEN each, sent together: on a cluster, to each shard's node). */
export async function outboxBacklog(redis: Redis, prefix: string): Promise<number> {
  const lengths = await Promise.all(allOutboxKeys(prefix).map((key) => redis.xlen(key)));
  return lengths.reduce((sum, n) => sum + n, 0);
}

/** Waits until every outbox stream of `prefix` is empty; returns the ms it took, throws after `timeoutMs`. */
export async function waitForEmptyOutbox(
  redis: Redis,
  prefix: string,
  timeoutMs: number,
  pollMs = 25,
): Promise<number> {
  const started = Date.now();
  for (let left = await outboxBacklog(redis, prefix); left > 0; left = await outboxBacklog(redis, prefix)) {
    if (Date.now() - started > timeoutMs) throw new Error(`outbox not drained: ${left} entries left`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  return Date.now() - started;
}
