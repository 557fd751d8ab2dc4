/**
 * Reading a user's cached account consistently, deciding whether it may be compared with Postgres,
 * and rebuilding it from Postgres without losing a hold the hot path reserves meanwhile.
 *
 * Redis may legitimately be ahead of Postgres: a hold is reserved in Redis and reaches Postgres only
 * when the ledger writer applies the outbox entry, and an entry Postgres rejected stays dead-lettered
 * (its effect kept in Redis) until an operator replays it. We compare a user only when that user's
 * money is all written: no entry of the user's shard stream names them and the user has no
 * dead-lettered entry, both before and after the Postgres read, and the cached account is
 * byte-identical across the two reads (so nothing moved in between). Otherwise the user is deferred
 * to a later run. The rebuild itself goes through the one guard shared with the indexer
 * (shared/redis/rebuild-guard.ts), which checks the same inside Redis, atomically with the delete.
 */
import type { Sql } from '../shared/db/client.ts';
import { usdcToCentsCeil } from '../shared/money.ts';
import { type AccountSnapshot, accountFromPostgres } from '../shared/redis/account.ts';
import type { Redis } from '../shared/redis/client.ts';
import { ACCOUNT, userDeadLettersKey, userKeys } from '../shared/redis/keys.ts';
import {
  accountFingerprint,
  entriesNaming,
  type RebuildResult,
  rebuildIfWritten,
} from '../shared/redis/rebuild-guard.ts';
import { limits } from './limits.ts';

export interface CachedAccount {
  exists: boolean;
  account: Record<string, string>;
  holds: Record<string, string>;
  cards: Record<string, string>;
  /** Outbox entries of the user's shard that name the user (not yet written to Postgres). */
  pendingEntries: number;
  /** The user's dead-lettered entries whose money Postgres lacks (see the ledger writer). */
  deadLetters: number;
  /** The shard's stream was longer than the scan limit: the user counts as not drained. */
  scanIncomplete: boolean;
  /** A canonical text of account + holds + cards, compared between two reads. */
  fingerprint: string;
}

export { fingerprintOf } from '../shared/redis/rebuild-guard.ts';

function pairs(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(flat))
    for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  else if (flat !== null && typeof flat === 'object') Object.assign(out, flat);
  return out;
}

/**
 * Reads the account, its holds and cards, the user's pending outbox entries and dead letters in one
 * MULTI (all in the user's shard).
 */
export async function readCachedAccount(
  redis: Redis,
  prefix: string,
  userId: string,
  scanMax: number = limits.outboxScanMax,
): Promise<CachedAccount> {
  const keys = userKeys(prefix, userId);
  const replies = await redis
    .multi()
    .hgetall(keys.account)
    .hgetall(keys.holds)
    .hgetall(keys.cards)
    .xrange(keys.outbox, '-', '+', 'COUNT', scanMax + 1)
    .scard(userDeadLettersKey(prefix, userId))
    .exec();
  if (replies === null) throw new Error('redis MULTI was aborted');
  for (const [error] of replies) if (error !== null) throw error;
  const account = pairs(replies[0]?.[1]);
  const holds = pairs(replies[1]?.[1]);
  const cards = pairs(replies[2]?.[1]);
  const entries = (replies[3]?.[1] ?? []) as [string, string[]][];
  return {
    exists: Object.keys(account).length > 0,
    account,
    holds,
    cards,
    pendingEntries: entriesNaming(entries, userId),
    deadLetters: Number(replies[4]?.[1] ?? 0),
    scanIncomplete: entries.length > scanMax,
    fingerprint: accountFingerprint(account, holds, cards),
  };
}

/** True when every money movement of the user Redis has is in Postgres (see the header). */
export function isDrained(cached: CachedAccount): boolean {
  return cached.pendingEntries === 0 && cached.deadLetters === 0 && !cached.scanIncomplete;
}

export interface FieldDiff {
  field: string;
  redis: string | null;
  postgres: string | null;
}

/**
 * What differs between the cached account and the one Postgres implies. Day spend and velocity are
 * Redis-only counters and the build stamp and version are bookkeeping: they are not compared.
 */
export function diffAccount(cached: CachedAccount, expected: AccountSnapshot): FieldDiff[] {
  const want: Record<string, string> = {
    [ACCOUNT.status]: expected.status,
    [ACCOUNT.creditLimitCents]: expected.creditLimitCents.toString(),
    [ACCOUNT.dailyLimitCents]: expected.dailyLimitCents.toString(),
    [ACCOUNT.blockedMccs]: expected.blockedMccs.join(','),
    [ACCOUNT.debtOnchainUsdc]: expected.debtOnchainUsdc.toString(),
    [ACCOUNT.debtOnchainCents]: usdcToCentsCeil(expected.debtOnchainUsdc).toString(),
    [ACCOUNT.unsettledCents]: expected.unsettledCents.toString(),
    [ACCOUNT.holdsCents]: expected.holdsCents.toString(),
  };
  for (const [assetId, c] of expected.collateral) {
    want[ACCOUNT.collateralPrefix + assetId] = c.amountBase.toString();
    want[ACCOUNT.pendingWithdrawalPrefix + assetId] = c.pendingWithdrawalBase.toString();
  }
  const diffs: FieldDiff[] = [];
  const ignored = new Set<string>([ACCOUNT.version, ACCOUNT.builtAtMs]);
  const fields = new Set([...Object.keys(want), ...Object.keys(cached.account)]);
  for (const field of [...fields].sort()) {
    if (ignored.has(field)) continue;
    const isCollateral =
      field.startsWith(ACCOUNT.collateralPrefix) || field.startsWith(ACCOUNT.pendingWithdrawalPrefix);
    const r = cached.account[field] ?? null;
    const p = want[field] ?? null;
    // A zero position may be absent on either side.
    if (isCollateral && (r ?? '0') === (p ?? '0')) continue;
    if (r !== p) diffs.push({ field, redis: r, postgres: p });
  }
  const holds = new Map(expected.holds.map((h) => [h.authorizationId, h.heldCents.toString()]));
  for (const id of new Set([...holds.keys(), ...Object.keys(cached.holds)])) {
    const r = cached.holds[id] ?? null;
    const p = holds.get(id) ?? null;
    if (r !== p) diffs.push({ field: `hold:${id}`, redis: r, postgres: p });
  }
  for (const card of expected.cards) {
    const want = `${card.status}|${card.frozen ? 1 : 0}`;
    const r = cached.cards[card.cardId] ?? null;
    if (r !== want) diffs.push({ field: `card:${card.cardId}`, redis: r, postgres: want });
  }
  return diffs;
}

/**
 * True when Redis holds more than Postgres for some authorization (or in total): rebuilding from
 * Postgres would hand that credit back to the user, against "credit shrinks fast, grows slow", while
 * Stripe may still capture it. Such drift is reported, never repaired automatically.
 */
export function redisHoldsAhead(diffs: readonly FieldDiff[]): boolean {
  return diffs.some((d) => {
    if (!d.field.startsWith('hold:') && d.field !== ACCOUNT.holdsCents) return false;
    return BigInt(d.redis ?? '0') > BigInt(d.postgres ?? '0');
  });
}

export type { RebuildResult };

/**
 * Rebuilds a user's cached account from Postgres, guarded by the fingerprint read before the
 * comparison and by the shared unwritten-money guard (shared/redis/rebuild-guard.ts).
 */
export async function rebuildFromPostgres(
  redis: Redis,
  sql: Sql,
  prefix: string,
  userId: string,
  expectedFingerprint: string,
  nowMs: number,
): Promise<RebuildResult> {
  return rebuildIfWritten(redis, sql, prefix, userId, {
    expectedFingerprint,
    nowMs,
    outboxScanMax: limits.outboxScanMax,
  });
}

const deferral = (cached: CachedAccount) => (cached.deadLetters > 0 ? 'dead_letters' : 'pending_entries');

export type Comparison =
  | { state: 'not_cached' }
  | { state: 'missing_user' }
  | { state: 'deferred'; reason: 'pending_entries' | 'dead_letters' | 'changed_during_read' }
  | { state: 'compared'; diffs: FieldDiff[]; fingerprint: string; expected: AccountSnapshot };

/**
 * Compares one user's cached account with Postgres, only when the comparison means something: the
 * account is cached, the user's money is all written (no pending entry, no dead letter), and nothing
 * moved while Postgres was read.
 */
export async function compareUser(
  redis: Redis,
  sql: Sql,
  prefix: string,
  userId: string,
  nowMs: number,
): Promise<Comparison> {
  const before = await readCachedAccount(redis, prefix, userId);
  if (!before.exists) return { state: 'not_cached' };
  if (!isDrained(before)) return { state: 'deferred', reason: deferral(before) };
  const expected = await accountFromPostgres(sql, userId, nowMs);
  if (expected === null) return { state: 'missing_user' };
  const after = await readCachedAccount(redis, prefix, userId);
  if (!isDrained(after)) return { state: 'deferred', reason: deferral(after) };
  if (after.fingerprint !== before.fingerprint) return { state: 'deferred', reason: 'changed_during_read' };
  return { state: 'compared', diffs: diffAccount(after, expected), fingerprint: after.fingerprint, expected };
}
